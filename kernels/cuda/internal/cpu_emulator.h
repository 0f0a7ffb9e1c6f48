// A CPU emulator for kernels/cuda's kernel bodies, so their tests run on machines with no
// GPU (CI and this project's build machines) against the same references as on a GPU.
//
// EmulateGrid runs a kernel body once per thread of every block: blocks one after another,
// the threads of a block as cooperative fibers (ucontext) in the calling OS thread, switched
// at __syncthreads and at each warp shuffle. So it is deterministic and has no data races
// of its own; static __shared__ arrays (`__shared__` expands to `static`) are shared by
// the threads of a block as on a GPU because blocks never overlap. It checks what a GPU
// would leave undefined: a barrier that not every thread of the block (or warp) reaches
// aborts with a message instead of hanging, as does a shuffle with a partial mask.
//
// What it does not model: memory ordering between threads beyond the barriers, warp
// scheduling, timing, and anything a kernel body does not use from cuda_compat.h's list.
// It is a test of the kernels' arithmetic and indexing, not of their speed.
//
// Thread-safe: launches from several threads (several emulated GPU workers in one process)
// run one at a time, under a process-wide lock, because static __shared__ arrays are
// process-wide; calls do not nest.
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_CPU_EMULATOR_H_
#define KVSPAN_KERNELS_CUDA_INTERNAL_CPU_EMULATOR_H_

#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>

#include "common/float16.h"

#ifdef __CUDACC__
#error "cpu_emulator.h is for host builds only"
#endif

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace kvspan::kernels::cuda_emulation {

// The calling fiber's thread and block indices and the launch's dimensions.
const uint3& ThreadIdx();
const uint3& BlockIdx();
const dim3& BlockDim();
const dim3& GridDim();
void SyncThreads();
uint32_t ShuffleXorBits(uint32_t mask, uint32_t bits, int lane_mask);

// Runs `body` for every thread of every block of a grid. REQUIRES: block.x * block.y *
// block.z is a multiple of 32 when the body shuffles.
void EmulateGrid(dim3 grid, dim3 block, const std::function<void()>& body);

}  // namespace kvspan::kernels::cuda_emulation

#define threadIdx (::kvspan::kernels::cuda_emulation::ThreadIdx())
#define blockIdx (::kvspan::kernels::cuda_emulation::BlockIdx())
#define blockDim (::kvspan::kernels::cuda_emulation::BlockDim())
#define gridDim (::kvspan::kernels::cuda_emulation::GridDim())
#define __shared__ static
#define __syncthreads() ::kvspan::kernels::cuda_emulation::SyncThreads()

inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  return std::bit_cast<float>(
      ::kvspan::kernels::cuda_emulation::ShuffleXorBits(mask, std::bit_cast<uint32_t>(v), lane_mask));
}
inline int __shfl_xor_sync(unsigned mask, int v, int lane_mask) {
  return static_cast<int>(
      ::kvspan::kernels::cuda_emulation::ShuffleXorBits(mask, static_cast<uint32_t>(v), lane_mask));
}

// Integer atomics: a fiber runs uninterrupted until a barrier or a shuffle, so a plain
// read-modify-write is atomic here.
inline unsigned atomicAdd(unsigned* address, unsigned v) {
  const unsigned old = *address;
  *address = old + v;
  return old;
}
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long v) {
  const unsigned long long old = *address;
  *address = old + v;
  return old;
}

namespace kvspan::kernels::internal {
inline float Fp16BitsToFloat(uint16_t h) { return HalfToFloat(h); }
inline float Bf16BitsToFloat(uint32_t b) { return std::bit_cast<float>(b << 16); }
inline bool IsFiniteFloat(float v) { return std::isfinite(v); }
inline uint32_t FloatBits(float v) { return std::bit_cast<uint32_t>(v); }
inline uint16_t FloatToHalfBits(float v) { return FloatToHalf(v); }
inline double RoundHalfEven(double v) { return std::nearbyint(v); }
}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_CPU_EMULATOR_H_
