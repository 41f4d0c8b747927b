//! diffusers `AutoencoderKL` (work in progress).
