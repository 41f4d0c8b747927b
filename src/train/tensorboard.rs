//! TensorBoard event files (work in progress).
