//! Noise schedulers behind one trait (work in progress).
