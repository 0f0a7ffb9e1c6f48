// The allocator of weight storage (the model's buffers, OwnedWeightMatrix). It leaves
// resized elements uninitialized (the model's loader overwrites every weight, so zero-filling
// 5 GB first would only double the page faults), aligns every buffer to a 64-byte cache
// line (the AVX-512 kernels' 64-byte loads then never straddle two lines: linear_bench at
// m = 1 read bf16 ~30% slower from 16-byte aligned storage on Zen 5), and backs buffers of
// 2 MB or more with transparent huge pages where the kernel offers them (madvise mode),
// which cuts page faults at load and TLB misses when decode streams the weights.
#ifndef KVSPAN_KERNELS_WEIGHT_ALLOCATOR_H_
#define KVSPAN_KERNELS_WEIGHT_ALLOCATOR_H_

#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <new>
#include <utility>

namespace kvspan::kernels {

template <typename T>
struct WeightAllocator {
  using value_type = T;
  static constexpr size_t kHugePageBytes = size_t{2} << 20;
  static constexpr std::align_val_t kLineAlignment{64};

  WeightAllocator() = default;
  template <typename U>
  WeightAllocator(const WeightAllocator<U>&) noexcept {}

  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < kHugePageBytes) return static_cast<T*>(::operator new(bytes, kLineAlignment));
    const size_t rounded = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
    void* p = std::aligned_alloc(kHugePageBytes, rounded);
    if (p == nullptr) throw std::bad_alloc();  // as std::allocator would
    ::madvise(p, rounded, MADV_HUGEPAGE);     // advisory: failure only loses the speed-up
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) noexcept {
    if (n * sizeof(T) < kHugePageBytes) {
      ::operator delete(p, kLineAlignment);
    } else {
      std::free(p);
    }
  }
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <typename U>
  bool operator==(const WeightAllocator<U>&) const noexcept { return true; }
};

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_WEIGHT_ALLOCATOR_H_
