//! Neural networks, one module per upstream class, `VarStore` paths equal to safetensors keys.
pub mod activation;
pub mod clip_layers;
pub mod clip_text;
pub mod clip_text_config;
pub mod encode_batched;
pub mod init;
pub mod learned_embeds;
pub mod text_encoder;
pub mod unet;
pub mod vae;
