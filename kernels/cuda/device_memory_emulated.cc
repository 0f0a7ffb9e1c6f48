// device_memory.h for the CPU emulator's builds: "device" memory is host memory.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include <unistd.h>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/device_memory.h"

namespace kvspan::kernels {

int CudaDeviceCount() { return 1; }  // the emulated device

absl::StatusOr<CudaMemoryInfo> CudaMemGetInfo() {
  // The host's: physical memory, and MemAvailable (free memory plus what the kernel can
  // reclaim, such as the page cache; not MemFree, which a busy page cache drives to zero).
  const int64_t page = sysconf(_SC_PAGESIZE);
  CudaMemoryInfo info{.free_bytes = sysconf(_SC_AVPHYS_PAGES) * page, .total_bytes = sysconf(_SC_PHYS_PAGES) * page};
  if (std::FILE* f = std::fopen("/proc/meminfo", "r"); f != nullptr) {
    char line[256];
    long long kib = 0;
    while (std::fgets(line, sizeof(line), f) != nullptr) {
      if (std::sscanf(line, "MemAvailable: %lld kB", &kib) == 1) {
        info.free_bytes = kib * 1024;
        break;
      }
    }
    std::fclose(f);
  }
  return info;
}

std::string CudaDeviceName(int) { return "CPU emulator"; }

absl::Status CudaStatus(int cuda_error, const char* what) {
  if (cuda_error == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("emulated CUDA ", what, ": error ", cuda_error));
}

DeviceBuffer::~DeviceBuffer() { std::free(ptr_); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), size_bytes_(std::exchange(other.size_bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    std::free(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
  }
  return *this;
}

absl::Status DeviceBuffer::Reserve(int64_t size_bytes) {
  if (size_bytes <= size_bytes_) return absl::OkStatus();
  std::free(ptr_);
  ptr_ = nullptr;
  size_bytes_ = 0;
  // Poisoned (0xff bytes: NaN as floats), as fresh device memory holds no promise either.
  void* p = std::malloc(static_cast<size_t>(size_bytes));
  if (p == nullptr) return absl::ResourceExhaustedError("emulated CUDA malloc: out of memory");
  std::memset(p, 0xff, static_cast<size_t>(size_bytes));
  ptr_ = p;
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
  if (size_bytes > 0) std::memcpy(static_cast<char*>(ptr_) + offset, src, size_bytes);
  return absl::OkStatus();
}

absl::Status DeviceBuffer::CopyFromHostAsync(const void* src, int64_t size_bytes, int64_t offset, void*) {
  return CopyFromHost(src, size_bytes, offset);
}

absl::Status DeviceBuffer::CopyToHost(void* dst, int64_t size_bytes, int64_t offset) const {
  if (offset < 0 || size_bytes < 0 || offset + size_bytes > size_bytes_) {
    return absl::InternalError("DeviceBuffer::CopyToHost: range outside the buffer");
  }
  if (size_bytes > 0) std::memcpy(dst, static_cast<const char*>(ptr_) + offset, size_bytes);
  return absl::OkStatus();
}

absl::Status DeviceBuffer::CopyFromDevice(const DeviceBuffer& src, int64_t size_bytes, int64_t offset,
                                          int64_t src_offset) {
  if (offset < 0 || size_bytes < 0 || offset + size_bytes > size_bytes_ || src_offset < 0 ||
      src_offset + size_bytes > src.size_bytes_) {
    return absl::InternalError("DeviceBuffer::CopyFromDevice: range outside a buffer");
  }
  if (size_bytes > 0) std::memmove(static_cast<char*>(ptr_) + offset, static_cast<const char*>(src.ptr_) + src_offset, size_bytes);
  return absl::OkStatus();
}

absl::Status CudaSynchronize() { return absl::OkStatus(); }

absl::Status CudaSetDevice(int device) {
  if (device != 0) return absl::InvalidArgumentError(absl::StrCat("no CUDA device ", device, " (emulated: only 0)"));
  return absl::OkStatus();
}

// Events: host clock readings (emulated launches complete before they return).
CudaEventTimer::~CudaEventTimer() {
  delete static_cast<std::chrono::steady_clock::time_point*>(start_);
}

absl::Status CudaEventTimer::Start(void*) {
  if (start_ == nullptr) start_ = new std::chrono::steady_clock::time_point;
  *static_cast<std::chrono::steady_clock::time_point*>(start_) = std::chrono::steady_clock::now();
  return absl::OkStatus();
}

absl::Status CudaEventTimer::Stop(void*, double* elapsed_ms) {
  if (start_ == nullptr) return absl::FailedPreconditionError("CudaEventTimer::Stop without Start");
  *elapsed_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                          *static_cast<std::chrono::steady_clock::time_point*>(start_))
                    .count();
  return absl::OkStatus();
}

namespace internal {
absl::Status KvspanLaunchStatus(const char*) { return absl::OkStatus(); }
}  // namespace internal

}  // namespace kvspan::kernels
