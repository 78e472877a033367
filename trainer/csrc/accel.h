// The C interface of stackhive's libtorch shim (issue 4, item 6): what tch 0.24 does not expose
// (bf16 autocast, channels-last, fused optimizers, CUDA memory queries, CUDA graphs). The Rust
// side is trainer/src/accel/ffi.rs, which must declare exactly these signatures.
//
// Conventions, for every function here:
// - tensors are tch's `C_tensor*`, i.e. `at::Tensor*`; the shim never frees a tensor it is
//   given, and a tensor it returns is a `new at::Tensor` that the caller owns (tch's
//   `Tensor::from_ptr`);
// - the return value is NULL on success, else a malloc'ed error message the caller frees with
//   `shk_free_error`; no C++ exception ever leaves the shim.
// It must not hold state of its own: optimizer state and graphs belong to their Rust owners.

#ifndef STACKHIVE_ACCEL_H
#define STACKHIVE_ACCEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#include <ATen/ATen.h>
typedef at::Tensor shk_tensor;
extern "C" {
#else
typedef void shk_tensor;
#endif

typedef struct shk_graph shk_graph;
typedef struct shk_side_stream shk_side_stream;

void shk_free_error(char *err);

// Autocast, per device type (0: cpu, 1: cuda). `enter` stores the previous state in *prev_*.
char *shk_autocast_enter_bf16(int device_type, int *prev_enabled, int *prev_dtype);
char *shk_autocast_exit(int device_type, int prev_enabled, int prev_dtype);
char *shk_autocast_state(int device_type, int *enabled, int *dtype);

// Channels-last (NHWC strides on an NCHW tensor).
char *shk_to_channels_last(const shk_tensor *t, shk_tensor **out);
char *shk_is_channels_last(const shk_tensor *t, int *out);
char *shk_set_data_channels_last(const shk_tensor *t);

// Fused optimizers. `lr_tensor` may be NULL (then `lr` is used). `stepped[i]` is set to 1 when
// params[i] had a gradient and was updated, else 0.
char *shk_fused_adamw_step(const shk_tensor *const *params, const shk_tensor *const *exp_avgs,
                           const shk_tensor *const *exp_avg_sqs, const shk_tensor *const *steps,
                           size_t n, const shk_tensor *lr_tensor, double lr, double beta1,
                           double beta2, double weight_decay, double eps, uint8_t *stepped);
// `bufs` may be NULL when momentum is 0; `started[i]` says whether bufs[i] holds a momentum yet.
char *shk_fused_sgd_step(const shk_tensor *const *params, const shk_tensor *const *bufs,
                         const uint8_t *started, size_t n, const shk_tensor *lr_tensor, double lr,
                         double momentum, double dampening, int nesterov, double weight_decay,
                         uint8_t *stepped);
// Sets each tensor's gradient to undefined (PyTorch's zero_grad(set_to_none=True)).
char *shk_clear_grads(const shk_tensor *const *params, size_t n);

// CUDA (errors when the shim was built without CUDA headers, or the device is absent).
int shk_cuda_compiled(void);
char *shk_cuda_mem_get_info(int64_t device, uint64_t *free_bytes, uint64_t *total_bytes);
char *shk_cuda_empty_cache(void);
char *shk_cuda_max_memory_allocated(int64_t device, uint64_t *bytes);
char *shk_cuda_reset_peak_memory_stats(int64_t device);
char *shk_cuda_synchronize(int64_t device);

char *shk_side_stream_enter(int64_t device, shk_side_stream **out);
char *shk_side_stream_exit(shk_side_stream *s);

char *shk_graph_new(int64_t device, shk_graph **out);
char *shk_graph_capture_begin(shk_graph *g);
char *shk_graph_capture_end(shk_graph *g);
char *shk_graph_replay(shk_graph *g);
char *shk_graph_reset(shk_graph *g);
void shk_graph_free(shk_graph *g);

#ifdef __cplusplus
}
#endif

#endif
