//! diffusers `UNet2DConditionModel` (work in progress).
