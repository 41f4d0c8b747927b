//! Files in and out: atomic writes, safetensors, hub resolution, prompt files, SD single files.
pub mod atomic;
pub mod hub;
pub mod prompts;
pub mod single_file;
pub mod weights;
