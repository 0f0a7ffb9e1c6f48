// Device memory for kernels/cuda and its callers: RAII buffers and the one conversion of
// CUDA errors to absl::Status. This header never includes CUDA headers (STYLE.md: they stay
// in kernels/), so the model, the workers and the tests can own device memory through it.
#ifndef KVSPAN_KERNELS_CUDA_DEVICE_MEMORY_H_
#define KVSPAN_KERNELS_CUDA_DEVICE_MEMORY_H_

#include <cstdint>

#include "absl/status/status.h"

namespace kvspan::kernels {

// Number of CUDA devices visible to this process; 0 when there is no driver or device.
// Thread-safe.
int CudaDeviceCount();

// The status of a CUDA runtime error code (cudaError_t as int): OK for cudaSuccess,
// ResourceExhausted for cudaErrorMemoryAllocation, Internal otherwise; the message names
// `what` and CUDA's own error string.
absl::Status CudaStatus(int cuda_error, const char* what);

// One allocation of device memory (cudaMalloc) on the current device, freed on
// destruction. Move-only. Not thread-safe.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Makes the buffer at least `size_bytes` long, keeping nothing of its contents when it
  // grows (then the old allocation is freed: NOTE: cudaFree waits for the device, so no
  // kernel still reads it). ResourceExhausted when the device is out of memory.
  absl::Status Reserve(int64_t size_bytes);

  // Synchronous copies between host memory and [offset, offset + size_bytes) of the buffer.
  // REQUIRES: the range lies inside the buffer.
  absl::Status CopyFromHost(const void* src, int64_t size_bytes, int64_t offset = 0);
  absl::Status CopyToHost(void* dst, int64_t size_bytes, int64_t offset = 0) const;

  void* data() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  int64_t size_bytes() const { return size_bytes_; }

 private:
  void* ptr_ = nullptr;
  int64_t size_bytes_ = 0;
};

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_CUDA_DEVICE_MEMORY_H_
