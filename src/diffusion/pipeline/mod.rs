//! The Stable Diffusion pipeline: classifier-free guidance, SLD, batching (work in progress).
