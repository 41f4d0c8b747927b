//! The shapes world: an embedded text-to-image model with an exact oracle (work in progress).
