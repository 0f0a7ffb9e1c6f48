// CUDA path of kernels/attention.h: the same AttentionParams, the same math, computed on
// the GPU. This header never includes CUDA headers (STYLE.md: they stay in kernels/).
//
// AttentionCuda takes host pointers: it copies q, k and v to the device, runs the kernel
// and copies `out` back. That makes it testable against AttentionRef today; the decode
// worker's GPU path will call a device-pointer entry point added with the GPU issue.
// NOTE: synchronizes host and device.
#ifndef KVSPAN_KERNELS_CUDA_ATTENTION_CUDA_H_
#define KVSPAN_KERNELS_CUDA_ATTENTION_CUDA_H_

#include "absl/status/status.h"
#include "kernels/attention.h"
#include "kernels/cuda/device_memory.h"

namespace kvspan::kernels {

// Computes AttentionRef's result on device 0. Unavailable when there is no CUDA device;
// InvalidArgument for head_dim > 256 or broken params invariants; Internal for a CUDA
// error (its message included). Thread-safe.
absl::Status AttentionCuda(const AttentionParams& p);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_CUDA_ATTENTION_CUDA_H_
