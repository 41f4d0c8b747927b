//! Teacher–student fine-tuning of text encoders (work in progress).
pub mod optim;
pub mod tensorboard;
