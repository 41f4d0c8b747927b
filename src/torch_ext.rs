//! What libtorch can do and tch 0.24 does not expose, through a small C++ shim compiled against the
//! venv's libtorch headers (`csrc/torch_ext.cpp`, built by `build.rs`):
//! - [`Autocast`]: autocast on a device *with a dtype* (`torch.autocast(device, dtype=...)`). tch's
//!   own `autocast` can only switch CUDA autocast on, which then computes in fp16 whatever was asked;
//! - [`set_float32_matmul_precision`]: `torch.set_float32_matmul_precision` ("high" = TF32 on CUDA);
//! - [`fused_adamw`]: `torch._fused_adamw_`, the kernel behind `torch.optim.AdamW(fused=True)`.
//!
//! Every C++ exception is caught in the shim and comes back as an error with libtorch's text.
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use tch::{Device, Kind, Tensor};

use crate::error::Result;

/// An `at::Tensor*`, as tch holds it.
type RawTensor = *mut c_void;

mod ffi {
    use super::*;
    extern "C" {
        pub fn clipdoor_torch_last_error() -> *const c_char;
        pub fn clipdoor_autocast_get(
            cuda: c_int,
            enabled: *mut c_int,
            scalar_type: *mut c_int,
        ) -> c_int;
        pub fn clipdoor_autocast_set(cuda: c_int, enabled: c_int, scalar_type: c_int) -> c_int;
        pub fn clipdoor_autocast_enter() -> c_int;
        pub fn clipdoor_autocast_exit() -> c_int;
        pub fn clipdoor_set_float32_matmul_precision(precision: *const c_char) -> c_int;
        pub fn clipdoor_get_float32_matmul_precision(precision: *mut c_int) -> c_int;
        #[allow(clippy::too_many_arguments)]
        pub fn clipdoor_fused_adamw(
            params: *const RawTensor,
            grads: *const RawTensor,
            exp_avgs: *const RawTensor,
            exp_avg_sqs: *const RawTensor,
            state_steps: *const RawTensor,
            n: c_int,
            lr: f64,
            beta1: f64,
            beta2: f64,
            weight_decay: f64,
            eps: f64,
            grad_scale: RawTensor,
            found_inf: RawTensor,
        ) -> c_int;
    }
}

/// libtorch's text for the last failed shim call on this thread.
fn last_error(what: &str) -> anyhow::Error {
    // SAFETY: the shim returns a pointer to its thread-local string, valid until the next call.
    let text = unsafe { CStr::from_ptr(ffi::clipdoor_torch_last_error()) }
        .to_string_lossy()
        .into_owned();
    let first = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::anyhow!("libtorch: {what}: {first}")
}

fn check(rc: c_int, what: &str) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(last_error(what))
    }
}

/// c10::ScalarType codes of the kinds autocast can compute in.
fn scalar_type(kind: Kind) -> Result<c_int> {
    match kind {
        Kind::Half => Ok(5),
        Kind::Float => Ok(6),
        Kind::BFloat16 => Ok(15),
        other => Err(crate::input_err!(
            "autocast computes in f16, bf16 or f32, not {other:?}"
        )),
    }
}

fn is_cuda(device: Device) -> c_int {
    c_int::from(device.is_cuda())
}

/// An autocast region on one device type in one dtype; the previous state comes back on drop, and
/// the cast cache is cleared when the outermost region ends (as `torch.autocast`'s `__exit__`).
pub struct Autocast {
    cuda: c_int,
    was_enabled: c_int,
    was_dtype: c_int,
}

impl Autocast {
    /// Enter autocast on `device`'s type (CPU or CUDA) computing in `kind` (f16 or bf16).
    pub fn enter(device: Device, kind: Kind) -> Result<Self> {
        let cuda = is_cuda(device);
        let code = scalar_type(kind)?;
        let (mut was_enabled, mut was_dtype) = (0, 0);
        // SAFETY: plain values in and out; exceptions are caught in the shim.
        unsafe {
            check(
                ffi::clipdoor_autocast_get(cuda, &mut was_enabled, &mut was_dtype),
                "reading the autocast state",
            )?;
            check(
                ffi::clipdoor_autocast_set(cuda, 1, code),
                &format!("enabling {kind:?} autocast"),
            )?;
            check(ffi::clipdoor_autocast_enter(), "entering autocast")?;
        }
        Ok(Self {
            cuda,
            was_enabled,
            was_dtype,
        })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: as in `enter`; a failure here cannot be reported from drop and leaves autocast as
        // the region set it, which the next `enter` overrides.
        unsafe {
            ffi::clipdoor_autocast_exit();
            ffi::clipdoor_autocast_set(self.cuda, self.was_enabled, self.was_dtype);
        }
    }
}

/// Run `f` under autocast on `device` in `kind`.
pub fn autocast<T>(device: Device, kind: Kind, f: impl FnOnce() -> T) -> Result<T> {
    let _region = Autocast::enter(device, kind)?;
    Ok(f())
}

/// Whether autocast is on for `device`'s type, and in which kind.
pub fn autocast_state(device: Device) -> Result<(bool, Kind)> {
    let (mut enabled, mut dtype) = (0, 0);
    // SAFETY: plain values in and out.
    check(
        unsafe { ffi::clipdoor_autocast_get(is_cuda(device), &mut enabled, &mut dtype) },
        "reading the autocast state",
    )?;
    let kind = match dtype {
        5 => Kind::Half,
        15 => Kind::BFloat16,
        _ => Kind::Float,
    };
    Ok((enabled != 0, kind))
}

/// How float32 matmuls may compute (`torch.set_float32_matmul_precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulPrecision {
    /// Plain f32 (PyTorch's default).
    Highest,
    /// TF32 tensor cores on CUDA (Ampere and later).
    High,
    Medium,
}

impl MatmulPrecision {
    fn name(self) -> &'static str {
        match self {
            Self::Highest => "highest",
            Self::High => "high",
            Self::Medium => "medium",
        }
    }
}

/// Set the process-wide float32 matmul precision.
pub fn set_float32_matmul_precision(p: MatmulPrecision) -> Result<()> {
    let name = CString::new(p.name()).expect("no NUL in a constant");
    // SAFETY: a valid C string; exceptions are caught in the shim.
    check(
        unsafe { ffi::clipdoor_set_float32_matmul_precision(name.as_ptr()) },
        "setting the float32 matmul precision",
    )
}

/// The process-wide float32 matmul precision.
pub fn float32_matmul_precision() -> Result<MatmulPrecision> {
    let mut p = 0;
    // SAFETY: a plain value out.
    check(
        unsafe { ffi::clipdoor_get_float32_matmul_precision(&mut p) },
        "reading the float32 matmul precision",
    )?;
    Ok(match p {
        0 => MatmulPrecision::Highest,
        1 => MatmulPrecision::High,
        _ => MatmulPrecision::Medium,
    })
}

/// Hyper-parameters of one fused AdamW update.
#[derive(Debug, Clone, Copy)]
pub struct FusedAdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

fn raw(t: &Tensor) -> RawTensor {
    t.as_ptr() as RawTensor
}

/// `torch._fused_adamw_`: update `params` in place from `grads`, with `exp_avgs`/`exp_avg_sqs` as
/// the moment buffers and `steps` (f32 scalars on the parameters' device) as each parameter's step
/// count *after* this update. `grad_scale` divides the gradients first and `found_inf` (non-zero)
/// skips the update, as `torch.amp.GradScaler` uses them. All lists have the same length; tensors
/// on one device.
#[allow(clippy::too_many_arguments)]
pub fn fused_adamw(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    steps: &[Tensor],
    h: FusedAdamW,
    grad_scale: Option<&Tensor>,
    found_inf: Option<&Tensor>,
) -> Result<()> {
    let n = params.len();
    if [grads.len(), exp_avgs.len(), exp_avg_sqs.len(), steps.len()]
        .iter()
        .any(|&l| l != n)
    {
        anyhow::bail!("fused AdamW: lists of different lengths");
    }
    let ptrs = |ts: &[Tensor]| ts.iter().map(raw).collect::<Vec<_>>();
    let (p, g, m, v, s) = (
        ptrs(params),
        ptrs(grads),
        ptrs(exp_avgs),
        ptrs(exp_avg_sqs),
        ptrs(steps),
    );
    let opt = |t: Option<&Tensor>| t.map_or(std::ptr::null_mut(), raw);
    // SAFETY: every pointer is a live tch tensor borrowed for the call; exceptions are caught.
    check(
        unsafe {
            ffi::clipdoor_fused_adamw(
                p.as_ptr(),
                g.as_ptr(),
                m.as_ptr(),
                v.as_ptr(),
                s.as_ptr(),
                n as c_int,
                h.lr,
                h.beta1,
                h.beta2,
                h.weight_decay,
                h.eps,
                opt(grad_scale),
                opt(found_inf),
            )
        },
        "fused AdamW",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocast_computes_in_the_dtype_asked_and_restores_the_state() {
        let a = Tensor::randn([4, 4], (Kind::Float, Device::Cpu));
        let before = autocast_state(Device::Cpu).unwrap();
        let y = autocast(Device::Cpu, Kind::BFloat16, || {
            assert_eq!(autocast_state(Device::Cpu).unwrap(), (true, Kind::BFloat16));
            a.matmul(&a)
        })
        .unwrap();
        assert_eq!(y.kind(), Kind::BFloat16);
        assert_eq!(autocast_state(Device::Cpu).unwrap(), before);
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
    }

    #[test]
    fn matmul_precision_round_trips() {
        set_float32_matmul_precision(MatmulPrecision::High).unwrap();
        assert_eq!(float32_matmul_precision().unwrap(), MatmulPrecision::High);
        set_float32_matmul_precision(MatmulPrecision::Highest).unwrap();
        assert_eq!(
            float32_matmul_precision().unwrap(),
            MatmulPrecision::Highest
        );
    }

    #[test]
    fn a_libtorch_error_comes_back_as_an_error() {
        let p = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let g = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        let m = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let v = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let s = Tensor::from(1f32);
        let h = FusedAdamW {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            weight_decay: 0.0,
            eps: 1e-8,
        };
        let err = fused_adamw(&[p], &[g], &[m], &[v], &[s], h, None, None).unwrap_err();
        assert!(
            err.to_string().starts_with("libtorch: fused AdamW:"),
            "{err}"
        );
    }
}
