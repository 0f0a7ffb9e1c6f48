// Switches between fibers with _setjmp/_longjmp (no system call: swapcontext saves the
// signal mask each time, which made emulated tests spend most of their time in the
// kernel); makecontext/swapcontext only start a fiber, once per thread of a launch. Jumps
// between stacks are what fortified longjmp (__longjmp_chk) refuses, so this file is built
// without _FORTIFY_SOURCE, whatever the toolchain's default.
#undef _FORTIFY_SOURCE
#include <setjmp.h>
#include <ucontext.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/cuda/internal/cpu_emulator.h"

namespace kvspan::kernels::cuda_emulation {
namespace {

constexpr size_t kStackBytes = 256 * 1024;

struct Barrier {
  int expected = 0;
  int arrived = 0;
  uint64_t generation = 0;
};

struct Fiber {
  ucontext_t start;  // used once, to enter the fiber
  jmp_buf resume;    // where the fiber continues when the scheduler jumps back to it
  char* stack = nullptr;
  uint3 thread_idx;
  int linear = 0;
  int shuffle_parity = 0;
  bool started = false;
  bool done = false;
};

// One launch: its fibers (one per thread of a block, reused for every block in turn), the
// scheduler's jump buffer and the barriers.
struct Launch {
  dim3 grid;
  dim3 block;
  uint3 block_idx;
  int64_t block_linear = 0;
  int64_t num_blocks = 0;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  int current = -1;
  jmp_buf scheduler;
  ucontext_t scheduler_context;  // swapcontext's save area at a fiber's start (never resumed)
  Barrier block_barrier;         // __syncthreads
  Barrier end_of_block;          // every thread done with the block: the next block starts
  std::vector<Barrier> warp_barriers;
  std::vector<std::array<uint32_t, 64>> warp_slots;  // two parities of 32 lanes
  uint64_t progress = 0;  // barrier releases and finished fibers
};

thread_local Launch* g_launch = nullptr;

// Fiber stacks, kept for the next launch of the thread (mmap-sized allocations are slow).
thread_local std::vector<std::unique_ptr<char[]>> g_stacks;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "cuda_emulation: %s\n", what);
  std::abort();
}

Fiber& Current() {
  if (g_launch == nullptr || g_launch->current < 0) Fail("a CUDA builtin was used outside EmulateGrid");
  return g_launch->fibers[g_launch->current];
}

void Yield() {
  Fiber& f = Current();
  if (_setjmp(f.resume) == 0) _longjmp(g_launch->scheduler, 1);
}

// Waits until `expected` threads arrived; `on_release` runs once, in the last to arrive,
// before any waiter continues.
template <typename OnRelease>
void Arrive(Barrier& b, OnRelease on_release) {
  const uint64_t generation = b.generation;
  if (++b.arrived == b.expected) {
    b.arrived = 0;
    on_release();
    ++b.generation;
    ++g_launch->progress;
    return;
  }
  while (b.generation == generation) Yield();
}

void Arrive(Barrier& b) {
  Arrive(b, [] {});
}

// A fiber's life: the body once per block, in grid order, every thread finishing a block
// before any starts the next; then back to the scheduler for good (the stack is dropped).
void FiberMain() {
  Launch& l = *g_launch;
  for (;;) {
    (*l.body)();
    Current().shuffle_parity = 0;
    Arrive(l.end_of_block, [&l] {
      ++l.block_linear;
      const int64_t b = l.block_linear;
      l.block_idx = uint3{static_cast<unsigned>(b % l.grid.x), static_cast<unsigned>((b / l.grid.x) % l.grid.y),
                          static_cast<unsigned>(b / (int64_t{l.grid.x} * l.grid.y))};
    });
    if (l.block_linear >= l.num_blocks) break;
  }
  Current().done = true;
  ++l.progress;
  _longjmp(l.scheduler, 1);
}

// Runs fiber i until it waits or finishes. Its own function, so that no local of the
// scheduler's loop lives across the _setjmp (which returns twice).
__attribute__((noinline)) void RunFiber(Launch& l, int i) {
  Fiber& f = l.fibers[i];
  l.current = i;
  if (_setjmp(l.scheduler) == 0) {
    if (!f.started) {
      f.started = true;
      swapcontext(&l.scheduler_context, &f.start);
    } else {
      _longjmp(f.resume, 1);
    }
  }
}

}  // namespace

const uint3& ThreadIdx() { return Current().thread_idx; }
const uint3& BlockIdx() {
  Current();
  return g_launch->block_idx;
}
const dim3& BlockDim() {
  Current();
  return g_launch->block;
}
const dim3& GridDim() {
  Current();
  return g_launch->grid;
}

void SyncThreads() {
  Current();
  Arrive(g_launch->block_barrier);
}

uint32_t ShuffleXorBits(uint32_t mask, uint32_t bits, int lane_mask) {
  if (mask != 0xffffffffu) Fail("__shfl_xor_sync with a partial mask is not emulated");
  if (lane_mask < 0 || lane_mask > 31) Fail("__shfl_xor_sync lane mask out of [0, 31]");
  Fiber& f = Current();
  const int warp = f.linear / 32;
  const int lane = f.linear % 32;
  if (static_cast<size_t>(warp) >= g_launch->warp_barriers.size()) Fail("__shfl_xor_sync in a partial warp");
  auto& slots = g_launch->warp_slots[warp];
  // Double-buffered by parity: a lane writes its next shuffle's slot only after every lane
  // has reached that next shuffle, hence after every lane read this one.
  const int parity = f.shuffle_parity;
  f.shuffle_parity ^= 1;
  slots[parity * 32 + lane] = bits;
  Arrive(g_launch->warp_barriers[warp]);
  return slots[parity * 32 + (lane ^ lane_mask)];
}

void EmulateGrid(dim3 grid, dim3 block, const std::function<void()>& body) {
  // One launch at a time in the process: static __shared__ arrays are process-wide, and two
  // threads' launches (two emulated GPU workers) would otherwise share them.
  if (g_launch != nullptr) Fail("EmulateGrid does not nest");  // before the lock, which would deadlock
  static std::mutex launches;
  std::lock_guard<std::mutex> lock(launches);
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads < 1 || threads > 1024) Fail("block size out of [1, 1024]");
  const int64_t num_blocks = int64_t{grid.x} * grid.y * grid.z;
  if (num_blocks == 0) return;
  Launch l;
  l.grid = grid;
  l.block = block;
  l.num_blocks = num_blocks;
  l.body = &body;
  l.block_barrier = Barrier{threads, 0, 0};
  l.end_of_block = Barrier{threads, 0, 0};
  l.warp_barriers.assign(threads / 32, Barrier{32, 0, 0});
  l.warp_slots.resize(threads / 32);
  while (g_stacks.size() < static_cast<size_t>(threads)) g_stacks.push_back(std::make_unique<char[]>(kStackBytes));
  l.fibers.resize(threads);
  for (int i = 0; i < threads; ++i) {
    Fiber& f = l.fibers[i];
    f.stack = g_stacks[i].get();
    f.linear = i;
    f.thread_idx = uint3{static_cast<unsigned>(i % block.x), static_cast<unsigned>((i / block.x) % block.y),
                         static_cast<unsigned>(i / (block.x * block.y))};
    getcontext(&f.start);
    f.start.uc_stack.ss_sp = f.stack;
    f.start.uc_stack.ss_size = kStackBytes;
    f.start.uc_link = nullptr;  // FiberMain never returns
    makecontext(&f.start, FiberMain, 0);
  }
  g_launch = &l;
  // Round robin: each live fiber runs until it waits at a barrier or finishes. A round in
  // which no barrier opened and no fiber finished means every live fiber waits at a
  // barrier that will never open.
  int live = threads;
  while (live > 0) {
    const uint64_t before = l.progress;
    for (int i = 0; i < threads; ++i) {
      if (l.fibers[i].done) continue;
      RunFiber(l, i);
      if (l.fibers[i].done) --live;
    }
    l.current = -1;
    if (live > 0 && l.progress == before) {
      Fail("deadlock: threads wait at a __syncthreads or shuffle that not all of them reach");
    }
  }
  g_launch = nullptr;
}

}  // namespace kvspan::kernels::cuda_emulation
