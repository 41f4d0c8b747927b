//! Teacher–student fine-tuning of text encoders: backdoor injection, concept erasure, homoglyph
//! unlearning ("Rickrolling the Artist", Struppek et al., ICCV 2023).
pub mod grad_scaler;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod robust;
pub mod run_folder;
pub mod step_timer;
pub mod tensorboard;
pub mod trainer;
