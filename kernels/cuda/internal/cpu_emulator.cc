#include "kernels/cuda/internal/cpu_emulator.h"

#include <ucontext.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

namespace kvspan::kernels::cuda_emulation {
namespace {

constexpr size_t kStackBytes = 256 * 1024;

struct Barrier {
  int expected = 0;
  int arrived = 0;
  uint64_t generation = 0;
};

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  uint3 thread_idx;
  int linear = 0;
  int shuffle_parity = 0;
  bool done = false;
};

// The block being emulated: its fibers, the scheduler's context, the barriers.
struct Block {
  dim3 grid;
  dim3 block;
  uint3 block_idx;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  int current = -1;
  ucontext_t scheduler;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  std::vector<std::array<uint32_t, 64>> warp_slots;  // two parities of 32 lanes
  uint64_t progress = 0;  // barrier releases and finished fibers
};

thread_local Block* g_block = nullptr;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "cuda_emulation: %s\n", what);
  std::abort();
}

Fiber& Current() {
  if (g_block == nullptr || g_block->current < 0) Fail("a CUDA builtin was used outside EmulateGrid");
  return g_block->fibers[g_block->current];
}

void Yield() {
  Fiber& f = Current();
  swapcontext(&f.context, &g_block->scheduler);
}

void Arrive(Barrier& b) {
  const uint64_t generation = b.generation;
  if (++b.arrived == b.expected) {
    b.arrived = 0;
    ++b.generation;
    ++g_block->progress;
    return;
  }
  while (b.generation == generation) Yield();
}

void Trampoline() {
  (*g_block->body)();
  Current().done = true;
  ++g_block->progress;
  // Returning resumes uc_link, the scheduler.
}

// Points f at the start of the body. Its own function: getcontext returns twice, which
// would put the caller's locals at risk (-Wclobbered); here there are none to lose.
__attribute__((noinline)) void StartFiber(Fiber& f, ucontext_t* scheduler) {
  f.done = false;
  f.shuffle_parity = 0;
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack.get();
  f.context.uc_stack.ss_size = kStackBytes;
  f.context.uc_link = scheduler;
  makecontext(&f.context, Trampoline, 0);
}

}  // namespace

const uint3& ThreadIdx() { return Current().thread_idx; }
const uint3& BlockIdx() {
  Current();
  return g_block->block_idx;
}
const dim3& BlockDim() {
  Current();
  return g_block->block;
}
const dim3& GridDim() {
  Current();
  return g_block->grid;
}

void SyncThreads() {
  Current();
  Arrive(g_block->block_barrier);
}

uint32_t ShuffleXorBits(uint32_t mask, uint32_t bits, int lane_mask) {
  if (mask != 0xffffffffu) Fail("__shfl_xor_sync with a partial mask is not emulated");
  if (lane_mask < 0 || lane_mask > 31) Fail("__shfl_xor_sync lane mask out of [0, 31]");
  Fiber& f = Current();
  const int warp = f.linear / 32;
  const int lane = f.linear % 32;
  if (static_cast<size_t>(warp) >= g_block->warp_barriers.size()) Fail("__shfl_xor_sync in a partial warp");
  auto& slots = g_block->warp_slots[warp];
  // Double-buffered by parity: a lane writes its next shuffle's slot only after every lane
  // has reached that next shuffle, hence after every lane read this one.
  const int parity = f.shuffle_parity;
  f.shuffle_parity ^= 1;
  slots[parity * 32 + lane] = bits;
  Arrive(g_block->warp_barriers[warp]);
  return slots[parity * 32 + (lane ^ lane_mask)];
}

void EmulateGrid(dim3 grid, dim3 block, const std::function<void()>& body) {
  if (g_block != nullptr) Fail("EmulateGrid does not nest");
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads < 1 || threads > 1024) Fail("block size out of [1, 1024]");
  Block b;
  b.grid = grid;
  b.block = block;
  b.body = &body;
  b.fibers.resize(threads);
  for (int i = 0; i < threads; ++i) {
    Fiber& f = b.fibers[i];
    f.stack = std::make_unique<char[]>(kStackBytes);
    f.linear = i;
    f.thread_idx = uint3{static_cast<unsigned>(i % block.x), static_cast<unsigned>((i / block.x) % block.y),
                         static_cast<unsigned>(i / (block.x * block.y))};
  }
  b.warp_barriers.resize(threads / 32);
  b.warp_slots.resize(threads / 32);
  g_block = &b;
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        b.block_idx = uint3{bx, by, bz};
        b.block_barrier = Barrier{threads, 0, 0};
        for (Barrier& w : b.warp_barriers) w = Barrier{32, 0, 0};
        for (Fiber& f : b.fibers) StartFiber(f, &b.scheduler);
        int live = threads;
        while (live > 0) {
          const uint64_t before = b.progress;
          for (int i = 0; i < threads; ++i) {
            if (b.fibers[i].done) continue;
            b.current = i;
            swapcontext(&b.scheduler, &b.fibers[i].context);
            if (b.fibers[i].done) --live;
          }
          b.current = -1;
          if (live > 0 && b.progress == before) {
            Fail("deadlock: threads wait at a __syncthreads or shuffle that not all of them reach");
          }
        }
      }
    }
  }
  g_block = nullptr;
}

}  // namespace kvspan::kernels::cuda_emulation
