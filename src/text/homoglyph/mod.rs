//! Unicode look-alike characters: detection, normalisation, attack generation (work in progress).
