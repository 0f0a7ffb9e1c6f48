// What kernel bodies (*.cuh here) need from CUDA, so that the same source compiles with
// nvcc for the GPU and with the host compiler for the CPU emulator (cpu_emulator.h), where
// kernels/cuda's tests run them without a GPU. Kernel bodies use only: threadIdx,
// blockIdx, blockDim, gridDim, __syncthreads, __shfl_xor_sync over full warps, static
// __shared__ arrays, expf/fmaf/fmaxf, the fp16/bf16 bit conversions below, and
// KVSPAN_UNROLL for `#pragma unroll`.
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_CUDA_COMPAT_H_
#define KVSPAN_KERNELS_CUDA_INTERNAL_CUDA_COMPAT_H_

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define KVSPAN_UNROLL _Pragma("unroll")
#define KVSPAN_DEVICE __device__ __forceinline__
#define KVSPAN_GLOBAL(threads) __global__ void __launch_bounds__(threads)

namespace kvspan::kernels::internal {
// fp16 / bf16 bit patterns to float (exact).
__device__ __forceinline__ float Fp16BitsToFloat(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float Bf16BitsToFloat(uint32_t b) { return __uint_as_float(b << 16); }
__device__ __forceinline__ bool IsFiniteFloat(float v) { return isfinite(v); }
}  // namespace kvspan::kernels::internal
#else
#include "kernels/cuda/internal/cpu_emulator.h"
#define KVSPAN_UNROLL
#define KVSPAN_DEVICE inline
#define KVSPAN_GLOBAL(threads) void
#endif

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_CUDA_COMPAT_H_
