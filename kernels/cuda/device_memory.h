// Device memory for kernels/cuda and its callers: RAII buffers, copies, synchronization,
// event timers and the one conversion of CUDA errors to absl::Status. This header never
// includes CUDA headers (STYLE.md: they stay in kernels/), so the model, the workers and the
// tests can own device memory through it.
//
// Two implementations: device_memory.cc (the CUDA runtime) and device_memory_emulated.cc
// (host memory for the CPU emulator's builds, internal/cpu_emulator.h: "device" memory is
// malloc'd, copies are memcpy, CudaDeviceCount() is 1, streams are ignored because emulated
// launches run at once). A binary links one of the two.
#ifndef KVSPAN_KERNELS_CUDA_DEVICE_MEMORY_H_
#define KVSPAN_KERNELS_CUDA_DEVICE_MEMORY_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

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

  // Reserve(size_bytes), then CopyFromHost(src, size_bytes): the buffer now holds a copy of
  // those host bytes.
  absl::Status Assign(const void* src, int64_t size_bytes);

  // Synchronous copies between host memory and [offset, offset + size_bytes) of the buffer.
  // REQUIRES: the range lies inside the buffer.
  absl::Status CopyFromHost(const void* src, int64_t size_bytes, int64_t offset = 0);
  // The same enqueued on `stream` (a cudaStream_t). From pageable memory it first waits
  // for the stream's earlier work, and `src` may be reused once it returns.
  absl::Status CopyFromHostAsync(const void* src, int64_t size_bytes, int64_t offset, void* stream);
  absl::Status CopyToHost(void* dst, int64_t size_bytes, int64_t offset = 0) const;
  // Synchronous device-to-device copy from [src_offset, + size_bytes) of `src`.
  absl::Status CopyFromDevice(const DeviceBuffer& src, int64_t size_bytes, int64_t offset = 0,
                              int64_t src_offset = 0);

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

// Waits for all work on the current device.
absl::Status CudaSynchronize();

// Makes `device` the calling thread's current device (cudaSetDevice). InvalidArgument for a
// device outside [0, CudaDeviceCount()).
absl::Status CudaSetDevice(int device);

// Memory of the calling thread's current device (cudaMemGetInfo): what is free now and the
// total. The emulated build reports the host's available and physical memory.
struct CudaMemoryInfo {
  int64_t free_bytes = 0;
  int64_t total_bytes = 0;
};
absl::StatusOr<CudaMemoryInfo> CudaMemGetInfo();

// The device's name for logs ("NVIDIA H200"; "CPU emulator" in the emulated build), or
// "device N" when the driver cannot say.
std::string CudaDeviceName(int device);

// Times work on a stream with a pair of CUDA events (benchmarks). Not thread-safe.
class CudaEventTimer {
 public:
  CudaEventTimer() = default;
  ~CudaEventTimer();
  CudaEventTimer(const CudaEventTimer&) = delete;
  CudaEventTimer& operator=(const CudaEventTimer&) = delete;

  // Records the start on `stream` (a cudaStream_t; null = the default stream).
  absl::Status Start(void* stream);
  // Records the end on `stream`, waits for it and returns the milliseconds between the two.
  // FailedPrecondition without a Start.
  absl::Status Stop(void* stream, double* elapsed_ms);

 private:
  void* start_ = nullptr;  // cudaEvent_t
  void* stop_ = nullptr;
};

namespace internal {
// The launch error of the last KVSPAN_LAUNCH (internal/cuda_compat.h); OK in the emulator,
// where launches run when they are made.
absl::Status KvspanLaunchStatus(const char* what);
}  // namespace internal

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_CUDA_DEVICE_MEMORY_H_
