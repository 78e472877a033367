// CUDA half of the shim (see accel.h): memory queries, side streams and CUDA graphs. build.rs
// defines SHK_WITH_CUDA only when the CUDA runtime headers and libraries were found; without
// it every entry point reports that, at run time, instead of failing the build. It must not
// touch the device before checking that the device exists: on a machine without a GPU each
// call is an error, never a crash.

#include "accel.h"
#include "guard.h"

#ifdef SHK_WITH_CUDA

#include <ATen/Context.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/Event.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <memory>

struct shk_side_stream {
  shk_side_stream(c10::cuda::CUDAStream prev, c10::cuda::CUDAStream side)
      : prev(prev), side(side), guard(side) {}
  c10::cuda::CUDAStream prev;
  c10::cuda::CUDAStream side;
  // Makes `side` the current stream of its device until this is deleted.
  c10::cuda::CUDAStreamGuard guard;
};

struct shk_graph {
  c10::DeviceIndex device;
  at::cuda::CUDAGraph graph;
};

namespace {

c10::DeviceIndex checked_device(int64_t device) {
  int64_t count = c10::cuda::device_count();
  TORCH_CHECK(device >= 0 && device < count, "cuda device ", device,
              " is not available: libtorch sees ", count, " CUDA device(s)");
  at::globalContext().lazyInitDevice(at::kCUDA);
  return static_cast<c10::DeviceIndex>(device);
}

// `waiter` runs nothing queued after this until `done`'s work so far has finished
// (torch.cuda.Stream.wait_stream).
void wait_stream(const c10::cuda::CUDAStream &waiter, const c10::cuda::CUDAStream &done) {
  c10::Event event(c10::DeviceType::CUDA);
  event.record(done);
  event.block(waiter);
}

} // namespace

extern "C" {

int shk_cuda_compiled(void) { return 1; }

char *shk_cuda_mem_get_info(int64_t device, uint64_t *free_bytes, uint64_t *total_bytes) {
  return shk::guard([&] {
    c10::cuda::CUDAGuard on(checked_device(device));
    size_t free = 0, total = 0;
    C10_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    *free_bytes = free;
    *total_bytes = total;
  });
}

char *shk_cuda_empty_cache(void) {
  return shk::guard([&] {
    checked_device(0);
    c10::cuda::CUDACachingAllocator::emptyCache();
  });
}

char *shk_cuda_max_memory_allocated(int64_t device, uint64_t *bytes) {
  return shk::guard([&] {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(checked_device(device));
    auto peak =
        stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
            .peak;
    *bytes = peak < 0 ? 0 : static_cast<uint64_t>(peak);
  });
}

char *shk_cuda_reset_peak_memory_stats(int64_t device) {
  return shk::guard(
      [&] { c10::cuda::CUDACachingAllocator::resetPeakStats(checked_device(device)); });
}

char *shk_cuda_synchronize(int64_t device) {
  return shk::guard([&] {
    c10::cuda::CUDAGuard on(checked_device(device));
    c10::cuda::device_synchronize();
  });
}

// A stream from libtorch's pool that first waits for the current stream, then becomes the
// current stream (torch.cuda.stream(s) after s.wait_stream(current)).
char *shk_side_stream_enter(int64_t device, shk_side_stream **out) {
  return shk::guard([&] {
    auto index = checked_device(device);
    auto prev = c10::cuda::getCurrentCUDAStream(index);
    auto side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, index);
    wait_stream(side, prev);
    *out = new shk_side_stream(prev, side);
  });
}

// Restores the previous stream, which then waits for the side stream's work. Frees `s` even on
// error.
char *shk_side_stream_exit(shk_side_stream *s) {
  std::unique_ptr<shk_side_stream> owned(s);
  return shk::guard([&] { wait_stream(owned->prev, owned->side); });
}

char *shk_graph_new(int64_t device, shk_graph **out) {
  return shk::guard([&] {
    auto index = checked_device(device);
    c10::cuda::CUDAGuard on(index);
    *out = new shk_graph{index, at::cuda::CUDAGraph()};
  });
}

char *shk_graph_capture_begin(shk_graph *g) {
  return shk::guard([&] {
    c10::cuda::CUDAGuard on(g->device);
    g->graph.capture_begin();
  });
}

char *shk_graph_capture_end(shk_graph *g) {
  return shk::guard([&] {
    c10::cuda::CUDAGuard on(g->device);
    g->graph.capture_end();
  });
}

char *shk_graph_replay(shk_graph *g) {
  return shk::guard([&] {
    c10::cuda::CUDAGuard on(g->device);
    g->graph.replay();
  });
}

char *shk_graph_reset(shk_graph *g) {
  return shk::guard([&] {
    c10::cuda::CUDAGuard on(g->device);
    g->graph.reset();
  });
}

void shk_graph_free(shk_graph *g) {
  char *err = shk::guard([&] {
    c10::cuda::CUDAGuard on(g->device);
    delete g;
  });
  shk_free_error(err);
}

} // extern "C"

#else // !SHK_WITH_CUDA

namespace {
char *no_cuda() {
  return shk::error("the accel shim was built without the CUDA runtime headers "
                    "(cuda_runtime_api.h); rebuild with CUDA to use this");
}
} // namespace

extern "C" {

int shk_cuda_compiled(void) { return 0; }
char *shk_cuda_mem_get_info(int64_t, uint64_t *, uint64_t *) { return no_cuda(); }
char *shk_cuda_empty_cache(void) { return no_cuda(); }
char *shk_cuda_max_memory_allocated(int64_t, uint64_t *) { return no_cuda(); }
char *shk_cuda_reset_peak_memory_stats(int64_t) { return no_cuda(); }
char *shk_cuda_synchronize(int64_t) { return no_cuda(); }
char *shk_side_stream_enter(int64_t, shk_side_stream **) { return no_cuda(); }
char *shk_side_stream_exit(shk_side_stream *) { return no_cuda(); }
char *shk_graph_new(int64_t, shk_graph **) { return no_cuda(); }
char *shk_graph_capture_begin(shk_graph *) { return no_cuda(); }
char *shk_graph_capture_end(shk_graph *) { return no_cuda(); }
char *shk_graph_replay(shk_graph *) { return no_cuda(); }
char *shk_graph_reset(shk_graph *) { return no_cuda(); }
void shk_graph_free(shk_graph *) {}

} // extern "C"

#endif
