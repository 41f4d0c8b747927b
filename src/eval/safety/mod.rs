//! The Stable Diffusion safety checker and Q16 (work in progress).
