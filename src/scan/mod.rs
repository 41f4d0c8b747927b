//! Encoder-side trigger scanning and defense evaluation (work in progress).
