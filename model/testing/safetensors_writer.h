// Writes safetensors files (test and tool helper): the header first, then each tensor's
// values produced on demand and converted to its dtype, so a file larger than memory
// can be streamed one tensor at a time. Thread-compatible free functions.
#ifndef KVSPAN_MODEL_TESTING_SAFETENSORS_WRITER_H_
#define KVSPAN_MODEL_TESTING_SAFETENSORS_WRITER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "model/safetensors.h"

namespace kvspan::model::testing {

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  int64_t num_elements() const;
};

// Writes `specs` in order; fill(spec, values) supplies each tensor's values as floats
// (integers for I32/I64 are rounded from them). Internal error on I/O failure.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorSpec>& specs,
                              absl::FunctionRef<void(const TensorSpec&, absl::Span<float>)> fill);

// In-memory convenience: name -> (shape, values), all in `dtype`.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};
absl::Status WriteSafetensors(const std::string& path, const std::map<std::string, HostTensor>& tensors,
                              DType dtype);

}  // namespace kvspan::model::testing

#endif  // KVSPAN_MODEL_TESTING_SAFETENSORS_WRITER_H_
