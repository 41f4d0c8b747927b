// What libtorch can do but tch 0.24 does not expose (src/torch_ext.rs wraps each function):
// - autocast per device *with a dtype* (tch's `autocast` only toggles CUDA autocast, which then runs
//   fp16 whatever the experiment asked for);
// - the float32 matmul precision (TF32 on CUDA tensor cores);
// - the fused AdamW kernel (`torch.optim.AdamW(fused=True)`), one pass over every parameter.
// Every function returns 0 on success, 1 after a C++ exception whose text
// `clipdoor_torch_last_error` then returns, so no exception crosses into Rust.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_adamw.h>

#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace {
thread_local std::string last_error;

at::DeviceType device_type(int cuda) { return cuda ? at::kCUDA : at::kCPU; }

std::vector<at::Tensor> list(at::Tensor **ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}
}  // namespace

#define GUARD(body)                        \
  try {                                    \
    body;                                  \
    return 0;                              \
  } catch (const std::exception &e) {      \
    last_error = e.what();                 \
    return 1;                              \
  } catch (...) {                          \
    last_error = "unknown C++ exception"; \
    return 1;                              \
  }

extern "C" {

const char *clipdoor_torch_last_error() { return last_error.c_str(); }

int clipdoor_autocast_get(int cuda, int *enabled, int *scalar_type) {
  GUARD(*enabled = at::autocast::is_autocast_enabled(device_type(cuda));
        *scalar_type = static_cast<int>(at::autocast::get_autocast_dtype(device_type(cuda))))
}

int clipdoor_autocast_set(int cuda, int enabled, int scalar_type) {
  GUARD(at::autocast::set_autocast_dtype(device_type(cuda), static_cast<at::ScalarType>(scalar_type));
        at::autocast::set_autocast_enabled(device_type(cuda), enabled != 0))
}

// Nesting as torch.autocast's __enter__/__exit__ keep it: the cast cache is cleared when the
// outermost region ends.
int clipdoor_autocast_enter() { GUARD(at::autocast::increment_nesting()) }

int clipdoor_autocast_exit() {
  GUARD(if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache())
}

// "highest" (plain f32), "high" (TF32 on CUDA), "medium": torch.set_float32_matmul_precision.
int clipdoor_set_float32_matmul_precision(const char *precision) {
  GUARD(at::globalContext().setFloat32MatmulPrecision(std::string(precision)))
}

// 0 highest, 1 high, 2 medium.
int clipdoor_get_float32_matmul_precision(int *precision) {
  GUARD(*precision = static_cast<int>(at::globalContext().float32MatmulPrecision()))
}

// torch._fused_adamw_ over n parameters. `state_steps` hold each parameter's step count *after*
// this update (torch.optim.AdamW increments them before the kernel). `grad_scale` and `found_inf`
// may be null (GradScaler's unscale and skip inside the kernel).
int clipdoor_fused_adamw(at::Tensor **params, at::Tensor **grads, at::Tensor **exp_avgs,
                         at::Tensor **exp_avg_sqs, at::Tensor **state_steps, int n, double lr,
                         double beta1, double beta2, double weight_decay, double eps,
                         at::Tensor *grad_scale, at::Tensor *found_inf) {
  GUARD(std::optional<at::Tensor> scale;
        std::optional<at::Tensor> inf;
        if (grad_scale) scale = *grad_scale;
        if (found_inf) inf = *found_inf;
        at::_fused_adamw_(list(params, n), list(grads, n), list(exp_avgs, n), list(exp_avg_sqs, n),
                          {}, list(state_steps, n), lr, beta1, beta2, weight_decay, eps,
                          /*amsgrad=*/false, /*maximize=*/false, scale, inf))
}

}  // extern "C"

// ---- gradients -------------------------------------------------------------------------------
extern "C" {
// tensor.grad = None (optimizer.zero_grad(set_to_none=True)): the next backward then hands its
// gradient buffer over instead of adding it into a zeroed one.
int clipdoor_clear_grad(at::Tensor *t) { GUARD(t->mutable_grad() = at::Tensor()) }
}
