//! NudeNet through ONNX Runtime (work in progress).
