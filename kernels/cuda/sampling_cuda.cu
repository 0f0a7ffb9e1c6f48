#include "kernels/cuda/sampling_cuda.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/internal/sampling_kernels.cuh"

namespace kvspan::kernels {
namespace {

// model::ValidateSamplingOptions's checks (kernels/ does not depend on model/), plus u.
absl::Status CheckRow(const SampleCudaRow& r, int index) {
  if (!std::isfinite(r.temperature) || r.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("SampleCuda: row ", index, ": temperature must be a finite number >= 0, got ", r.temperature));
  }
  if (r.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("SampleCuda: row ", index, ": top_k must be >= 0, got ", r.top_k));
  }
  if (!(r.top_p > 0 && r.top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SampleCuda: row ", index, ": top_p must be in (0, 1], got ", r.top_p));
  }
  if (r.temperature != 0 && !(r.u >= 0 && r.u < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("SampleCuda: row ", index, ": u must be in [0, 1), got ", r.u));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SampleCuda(const SampleCudaParams& p, void* stream) {
  if (p.num_rows < 1 || p.vocab < 1 || p.row_stride < p.vocab || p.logits == nullptr || p.rows == nullptr ||
      p.out == nullptr) {
    return absl::InvalidArgumentError("SampleCuda: shape out of range or null pointer");
  }
  for (int r = 0; r < p.num_rows; ++r) {
    RETURN_IF_ERROR(CheckRow(p.rows[r], r));
  }
  if (CudaDeviceCount() == 0) return absl::UnavailableError("no CUDA device");
  for (int first = 0; first < p.num_rows; first += internal::kSampleRowsPerLaunch) {
    const int rows = std::min(internal::kSampleRowsPerLaunch, p.num_rows - first);
    internal::SampleKernelParams k;
    k.logits = p.logits + first * p.row_stride;
    k.row_stride = p.row_stride;
    k.out = p.out + first;
    k.vocab = p.vocab;
    std::copy(p.rows + first, p.rows + first + rows, k.rows);
    const internal::LaunchShape s = internal::SampleShape(rows);
    KVSPAN_LAUNCH(internal::SampleKernel, s, stream, k);
    RETURN_IF_ERROR(internal::KvspanLaunchStatus("SampleCuda launch"));
  }
  return absl::OkStatus();
}

}  // namespace kvspan::kernels
