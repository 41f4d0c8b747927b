//! CLIP vision tower, image preprocessing, CLIP score, zero-shot classification (work in progress).
