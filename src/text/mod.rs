//! Text handling: the CLIP tokenizer and Unicode look-alike (homoglyph) tools.
pub mod homoglyph;
pub mod tokenizer;
