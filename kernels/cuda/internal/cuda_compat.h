// What kernels/cuda's sources need from CUDA, so that the same source compiles with nvcc
// for the GPU and with the host compiler for the CPU emulator (cpu_emulator.h), where the
// tests run them without a GPU: a "dual" source X.cu is built by nvcc into
// kvspan_kernels_cuda and, through a one-line X_emulated.cc that includes it, by g++ into
// kvspan_kernels_emulated. Kernel bodies use only: threadIdx, blockIdx, blockDim, gridDim,
// __syncthreads, __shfl_xor_sync over full warps, static __shared__ arrays, KVSPAN_CONSTANT tables, integer
// atomicAdd (unsigned, unsigned long long: exact in any order, so still deterministic),
// expf/fmaf/fmaxf/sqrtf/cosf/sinf and double exp, the fp16/bf16 bit conversions below, and
// KVSPAN_UNROLL for `#pragma unroll`. Host code launches with KVSPAN_LAUNCH and checks KvspanLaunchStatus,
// and touches memory only through device_memory.h.
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_CUDA_COMPAT_H_
#define KVSPAN_KERNELS_CUDA_INTERNAL_CUDA_COMPAT_H_

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define KVSPAN_UNROLL _Pragma("unroll")
#define KVSPAN_DEVICE __device__ __forceinline__
#define KVSPAN_HOST_DEVICE __host__ __device__ inline
// A table the kernels read (constant memory on the GPU); one .cu includes its definition.
#define KVSPAN_CONSTANT static __constant__ const
#define KVSPAN_GLOBAL(threads) __global__ void __launch_bounds__(threads)
// KVSPAN_LAUNCH(kernel, shape, stream, args...): shape has .grid and .block (dim3).
#define KVSPAN_LAUNCH(kernel, shape, stream, ...) \
  kernel<<<(shape).grid, (shape).block, 0, static_cast<cudaStream_t>(stream)>>>(__VA_ARGS__)
#define KVSPAN_EMULATED 0

namespace kvspan::kernels::internal {
// fp16 / bf16 bit patterns to float (exact).
__device__ __forceinline__ float Fp16BitsToFloat(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float Bf16BitsToFloat(uint32_t b) { return __uint_as_float(b << 16); }
__device__ __forceinline__ bool IsFiniteFloat(float v) { return isfinite(v); }
__device__ __forceinline__ uint32_t FloatBits(float v) { return __float_as_uint(v); }
// fp32 -> fp16 bits, round to nearest even (IEEE, subnormals included).
__device__ __forceinline__ uint16_t FloatToHalfBits(float v) { return __half_as_ushort(__float2half_rn(v)); }
// Round to nearest, ties to even (the default rounding mode's nearbyint).
__device__ __forceinline__ double RoundHalfEven(double v) { return rint(v); }
}  // namespace kvspan::kernels::internal
#else
#include "kernels/cuda/internal/cpu_emulator.h"
#define KVSPAN_UNROLL
#define KVSPAN_DEVICE inline
#define KVSPAN_HOST_DEVICE inline
#define KVSPAN_CONSTANT static const
#define KVSPAN_GLOBAL(threads) void
#define KVSPAN_LAUNCH(kernel, shape, stream, ...) \
  ::kvspan::kernels::cuda_emulation::EmulateGrid((shape).grid, (shape).block, [&] { kernel(__VA_ARGS__); })
#define KVSPAN_EMULATED 1
#endif

#include "kernels/cuda/device_memory.h"  // internal::KvspanLaunchStatus

namespace kvspan::kernels::internal {
// A kernel's grid and block, computed by one function that the launch uses on either side.
struct LaunchShape {
  dim3 grid;
  dim3 block;
};

// fp32 -> bf16 bits, round to nearest even: common/float16.h's FloatToBf16 for finite inputs.
KVSPAN_DEVICE uint16_t FloatToBf16Bits(float v) {
  const uint32_t bits = FloatBits(v);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}
}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_CUDA_COMPAT_H_
