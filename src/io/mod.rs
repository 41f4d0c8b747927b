//! Files in and out: atomic writes, safetensors, hub resolution, prompt files.
pub mod atomic;
pub mod hub;
pub mod prompts;
pub mod weights;
