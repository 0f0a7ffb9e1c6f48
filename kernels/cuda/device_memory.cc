#include "kernels/cuda/device_memory.h"

#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvspan::kernels {

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

absl::Status CudaStatus(int cuda_error, const char* what) {
  const auto e = static_cast<cudaError_t>(cuda_error);
  if (e == cudaSuccess) return absl::OkStatus();
  std::string message = absl::StrCat("CUDA ", what, ": ", cudaGetErrorString(e));
  if (e == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), size_bytes_(std::exchange(other.size_bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
  }
  return *this;
}

absl::Status DeviceBuffer::Reserve(int64_t size_bytes) {
  if (size_bytes <= size_bytes_) return absl::OkStatus();
  if (ptr_ != nullptr) {
    cudaFree(ptr_);
    ptr_ = nullptr;
    size_bytes_ = 0;
  }
  if (cudaError_t e = cudaMalloc(&ptr_, size_bytes); e != cudaSuccess) {
    ptr_ = nullptr;
    cudaGetLastError();
    return CudaStatus(e, "malloc");
  }
  size_bytes_ = size_bytes;
  return absl::OkStatus();
}

absl::Status DeviceBuffer::Assign(const void* src, int64_t size_bytes) {
  RETURN_IF_ERROR(Reserve(size_bytes));
  return CopyFromHost(src, size_bytes);
}

absl::Status DeviceBuffer::CopyFromHost(const void* src, int64_t size_bytes, int64_t offset) {
  if (offset < 0 || size_bytes < 0 || offset + size_bytes > size_bytes_) {
    return absl::InternalError("DeviceBuffer::CopyFromHost: range outside the buffer");
  }
  if (size_bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpy(static_cast<char*>(ptr_) + offset, src, size_bytes, cudaMemcpyHostToDevice),
                    "copy to device");
}

absl::Status DeviceBuffer::CopyFromHostAsync(const void* src, int64_t size_bytes, int64_t offset, void* stream) {
  if (offset < 0 || size_bytes < 0 || offset + size_bytes > size_bytes_) {
    return absl::InternalError("DeviceBuffer::CopyFromHostAsync: range outside the buffer");
  }
  if (size_bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpyAsync(static_cast<char*>(ptr_) + offset, src, size_bytes, cudaMemcpyHostToDevice,
                                    static_cast<cudaStream_t>(stream)),
                    "copy to device");
}

absl::Status DeviceBuffer::CopyToHost(void* dst, int64_t size_bytes, int64_t offset) const {
  if (offset < 0 || size_bytes < 0 || offset + size_bytes > size_bytes_) {
    return absl::InternalError("DeviceBuffer::CopyToHost: range outside the buffer");
  }
  if (size_bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpy(dst, static_cast<const char*>(ptr_) + offset, size_bytes, cudaMemcpyDeviceToHost),
                    "copy to host");
}

absl::Status DeviceBuffer::CopyFromDevice(const DeviceBuffer& src, int64_t size_bytes, int64_t offset,
                                          int64_t src_offset) {
  if (offset < 0 || size_bytes < 0 || offset + size_bytes > size_bytes_ || src_offset < 0 ||
      src_offset + size_bytes > src.size_bytes_) {
    return absl::InternalError("DeviceBuffer::CopyFromDevice: range outside a buffer");
  }
  if (size_bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpy(static_cast<char*>(ptr_) + offset, static_cast<const char*>(src.ptr_) + src_offset,
                               size_bytes, cudaMemcpyDeviceToDevice),
                    "copy on the device");
}

absl::Status CudaSynchronize() { return CudaStatus(cudaDeviceSynchronize(), "synchronize"); }

absl::StatusOr<CudaMemoryInfo> CudaMemGetInfo() {
  size_t free_bytes = 0, total_bytes = 0;
  RETURN_IF_ERROR(CudaStatus(cudaMemGetInfo(&free_bytes, &total_bytes), "memory info"));
  return CudaMemoryInfo{.free_bytes = static_cast<int64_t>(free_bytes), .total_bytes = static_cast<int64_t>(total_bytes)};
}

std::string CudaDeviceName(int device) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    return absl::StrCat("device ", device);
  }
  return prop.name;
}

absl::Status CudaSetDevice(int device) {
  if (device < 0 || device >= CudaDeviceCount()) {
    return absl::InvalidArgumentError(absl::StrCat("no CUDA device ", device));
  }
  return CudaStatus(cudaSetDevice(device), "set device");
}

CudaEventTimer::~CudaEventTimer() {
  if (start_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  if (stop_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}

absl::Status CudaEventTimer::Start(void* stream) {
  if (start_ == nullptr) {
    cudaEvent_t start, stop;
    if (cudaError_t e = cudaEventCreate(&start); e != cudaSuccess) return CudaStatus(e, "event create");
    if (cudaError_t e = cudaEventCreate(&stop); e != cudaSuccess) {
      cudaEventDestroy(start);
      return CudaStatus(e, "event create");
    }
    start_ = start;
    stop_ = stop;
  }
  return CudaStatus(cudaEventRecord(static_cast<cudaEvent_t>(start_), static_cast<cudaStream_t>(stream)),
                    "event record");
}

absl::Status CudaEventTimer::Stop(void* stream, double* elapsed_ms) {
  if (start_ == nullptr) return absl::FailedPreconditionError("CudaEventTimer::Stop without Start");
  const auto stop = static_cast<cudaEvent_t>(stop_);
  if (cudaError_t e = cudaEventRecord(stop, static_cast<cudaStream_t>(stream)); e != cudaSuccess) {
    return CudaStatus(e, "event record");
  }
  if (cudaError_t e = cudaEventSynchronize(stop); e != cudaSuccess) return CudaStatus(e, "event synchronize");
  float ms = 0.0f;
  if (cudaError_t e = cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), stop); e != cudaSuccess) {
    return CudaStatus(e, "event elapsed time");
  }
  *elapsed_ms = ms;
  return absl::OkStatus();
}

namespace internal {
absl::Status KvspanLaunchStatus(const char* what) { return CudaStatus(cudaGetLastError(), what); }
}  // namespace internal

}  // namespace kvspan::kernels
