// Device-independent half of the shim (see accel.h): autocast, channels-last and the fused
// optimizer steps. It must not keep state between calls: optimizer state tensors are owned by
// the Rust optimizer and passed in on every step.

#include "accel.h"
#include "guard.h"

#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>

#include <vector>

namespace {

at::DeviceType device_type_of(int code) {
  switch (code) {
  case 0:
    return at::kCPU;
  case 1:
    return at::kCUDA;
  default:
    TORCH_CHECK(false, "autocast device type code ", code, ": expected 0 (cpu) or 1 (cuda)");
  }
}

} // namespace

extern "C" {

void shk_free_error(char *err) { free(err); }

// Mirrors torch.autocast.__enter__: remember, enable, set the dtype, count the nesting. libtorch
// 2.11 has no C++ RAII guard for this; the Rust `Autocast` guard is it.
char *shk_autocast_enter_bf16(int device_type, int *prev_enabled, int *prev_dtype) {
  return shk::guard([&] {
    auto dt = device_type_of(device_type);
    *prev_enabled = at::autocast::is_autocast_enabled(dt) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dt));
    at::autocast::set_autocast_dtype(dt, at::kBFloat16);
    at::autocast::set_autocast_enabled(dt, true);
    at::autocast::increment_nesting();
  });
}

// Mirrors torch.autocast.__exit__: the cast cache lives until the outermost region ends.
char *shk_autocast_exit(int device_type, int prev_enabled, int prev_dtype) {
  return shk::guard([&] {
    auto dt = device_type_of(device_type);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(dt, prev_enabled != 0);
    at::autocast::set_autocast_dtype(dt, static_cast<at::ScalarType>(prev_dtype));
  });
}

char *shk_autocast_state(int device_type, int *enabled, int *dtype) {
  return shk::guard([&] {
    auto dt = device_type_of(device_type);
    *enabled = at::autocast::is_autocast_enabled(dt) ? 1 : 0;
    *dtype = static_cast<int>(at::autocast::get_autocast_dtype(dt));
  });
}

char *shk_to_channels_last(const shk_tensor *t, shk_tensor **out) {
  return shk::guard([&] {
    TORCH_CHECK(t->dim() == 4, "channels-last needs a 4-d tensor, found ", t->dim(), "-d");
    *out = new at::Tensor(t->contiguous(at::MemoryFormat::ChannelsLast));
  });
}

char *shk_is_channels_last(const shk_tensor *t, int *out) {
  return shk::guard([&] {
    *out = t->dim() == 4 && t->is_contiguous(at::MemoryFormat::ChannelsLast) ? 1 : 0;
  });
}

// Re-strides a parameter in place (same TensorImpl, so every shallow clone of it, the
// VarStore's included, sees the new layout). Must run before optimizer state is created.
char *shk_set_data_channels_last(const shk_tensor *t) {
  return shk::guard([&] {
    TORCH_CHECK(t->dim() == 4, "channels-last needs a 4-d tensor, found ", t->dim(), "-d");
    at::NoGradGuard no_grad;
    t->set_data(t->contiguous(at::MemoryFormat::ChannelsLast));
  });
}

// PyTorch's `_fused_adamw` path (torch/optim/adam.py): bump the step counts of the parameters
// that have a gradient, then one fused kernel over them. Parameters without a gradient keep
// their step count, as in PyTorch.
char *shk_fused_adamw_step(const shk_tensor *const *params, const shk_tensor *const *exp_avgs,
                           const shk_tensor *const *exp_avg_sqs, const shk_tensor *const *steps,
                           size_t n, const shk_tensor *lr_tensor, double lr, double beta1,
                           double beta2, double weight_decay, double eps, uint8_t *stepped) {
  return shk::guard([&] {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> p, g, m, v, s;
    for (size_t i = 0; i < n; ++i) {
      const at::Tensor &grad = params[i]->grad();
      stepped[i] = grad.defined() ? 1 : 0;
      if (!grad.defined()) {
        continue;
      }
      p.push_back(*params[i]);
      g.push_back(grad);
      m.push_back(*exp_avgs[i]);
      v.push_back(*exp_avg_sqs[i]);
      s.push_back(*steps[i]);
    }
    if (p.empty()) {
      return;
    }
    at::_foreach_add_(s, at::Scalar(1.0));
    const at::TensorList no_max_exp_avg_sqs; // amsgrad is off
    if (lr_tensor != nullptr) {
      at::_fused_adamw_(p, g, m, v, no_max_exp_avg_sqs, s, *lr_tensor, beta1, beta2,
                        weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false);
    } else {
      at::_fused_adamw_(p, g, m, v, no_max_exp_avg_sqs, s, lr, beta1, beta2, weight_decay, eps,
                        /*amsgrad=*/false, /*maximize=*/false);
    }
  });
}

namespace {

void fused_sgd(const std::vector<at::Tensor> &p, const std::vector<at::Tensor> &g,
               const std::vector<at::Tensor> &b, const shk_tensor *lr_tensor, double lr,
               double momentum, double dampening, bool nesterov, double weight_decay,
               bool first) {
  if (p.empty()) {
    return;
  }
  if (lr_tensor != nullptr) {
    at::_fused_sgd_(p, g, b, weight_decay, momentum, *lr_tensor, dampening, nesterov,
                    /*maximize=*/false, first);
  } else {
    at::_fused_sgd_(p, g, b, weight_decay, momentum, lr, dampening, nesterov,
                    /*maximize=*/false, first);
  }
}

} // namespace

// PyTorch's `_fused_sgd` path (torch/optim/sgd.py). Its first step copies the gradient into the
// momentum buffer instead of blending it in; PyTorch decides that for all parameters at once,
// here it is decided per parameter (`started`), so a parameter whose gradient appears late
// still gets a first step.
char *shk_fused_sgd_step(const shk_tensor *const *params, const shk_tensor *const *bufs,
                         const uint8_t *started, size_t n, const shk_tensor *lr_tensor, double lr,
                         double momentum, double dampening, int nesterov, double weight_decay,
                         uint8_t *stepped) {
  return shk::guard([&] {
    TORCH_CHECK(momentum == 0.0 || bufs != nullptr,
                "sgd with momentum ", momentum, " needs momentum buffers, found none");
    at::NoGradGuard no_grad;
    // [0]: first step of their momentum buffer, [1]: later steps (or no momentum at all).
    std::vector<at::Tensor> p[2], g[2], b[2];
    for (size_t i = 0; i < n; ++i) {
      const at::Tensor &grad = params[i]->grad();
      stepped[i] = grad.defined() ? 1 : 0;
      if (!grad.defined()) {
        continue;
      }
      size_t k = momentum == 0.0 || started[i] != 0 ? 1 : 0;
      p[k].push_back(*params[i]);
      g[k].push_back(grad);
      if (momentum != 0.0) {
        b[k].push_back(*bufs[i]);
      }
    }
    bool nest = nesterov != 0;
    fused_sgd(p[0], g[0], b[0], lr_tensor, lr, momentum, dampening, nest, weight_decay, true);
    fused_sgd(p[1], g[1], b[1], lr_tensor, lr, momentum, dampening, nest, weight_decay, false);
  });
}

char *shk_clear_grads(const shk_tensor *const *params, size_t n) {
  return shk::guard([&] {
    for (size_t i = 0; i < n; ++i) {
      params[i]->mutable_grad().reset();
    }
  });
}

} // extern "C"
