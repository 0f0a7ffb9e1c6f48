// Read-only access to safetensors files (https://github.com/huggingface/safetensors):
// a little-endian u64 header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets: [begin, end]}, "__metadata__": {...}}, then the tensor bytes.
//
// Files are memory-mapped; tensor data is read in place. SafetensorsCheckpoint opens the
// weights of a Hugging Face model directory: model.safetensors.index.json and its shards
// when the index exists, model.safetensors otherwise.
//
// Errors:
//   NotFound         a file does not exist (config, single file, a shard named by the index);
//                    Get() of a tensor that no file holds.
//   DataLoss         the file is not a well-formed safetensors file: shorter than its header,
//                    header not JSON or not the expected structure, data_offsets past the end
//                    of the file, overlapping tensors, a size that disagrees with dtype x shape;
//                    an index that is not valid JSON or has no weight_map, or names a tensor
//                    that its shard lacks.
//   InvalidArgument  a dtype this reader does not support (anything but F32, F16, BF16, I32,
//                    I64); a shard name in the index that is not a plain file name.
//
// Thread-safety: both classes are immutable after Open and thread-safe. TensorInfo
// pointers and the data they point to live as long as the object they came from.
#ifndef KVSPAN_MODEL_SAFETENSORS_H_
#define KVSPAN_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvspan::model {

enum class DType { kF32, kF16, kBF16, kI32, kI64 };

// "F32", "F16", "BF16", "I32", "I64" (the safetensors spelling).
absl::string_view DTypeName(DType dtype);
int DTypeSizeBytes(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // little-endian elements, row-major; borrowed from the mapping
  int64_t size_bytes = 0;

  int64_t num_elements() const;
  std::string ShapeString() const;  // "[2048, 8192]"
};

// Converts a floating-point tensor (F32, F16, BF16) to fp32. InvalidArgument for an
// integer dtype or when out.size() != num_elements().
absl::Status ConvertToFloat(const TensorInfo& tensor, absl::Span<float> out);
// Converts an integer tensor (I32, I64) to int32. InvalidArgument for a float dtype, a
// value out of int32 range, or when out.size() != num_elements().
absl::Status ConvertToInt32(const TensorInfo& tensor, absl::Span<int32_t> out);

// One memory-mapped safetensors file.
class SafetensorsFile {
 public:
  // Maps and validates the file (see the error list at the top of this header).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // The tensor named `name`, or null when the file has none.
  const TensorInfo* Find(absl::string_view name) const;
  const std::map<std::string, TensorInfo, std::less<>>& tensors() const { return tensors_; }
  // The raw JSON header bytes (for fingerprints).
  absl::string_view header() const { return header_; }
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;

  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_bytes_ = 0;
  absl::string_view header_;
  std::map<std::string, TensorInfo, std::less<>> tensors_;
};

// The weights of a model directory, single-file or sharded.
class SafetensorsCheckpoint {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> OpenDir(const std::string& dir);

  // NotFound (naming the tensor) when no file holds `name`.
  absl::StatusOr<const TensorInfo*> Get(absl::string_view name) const;
  bool Contains(absl::string_view name) const;
  // Every file's header and the index bytes, in a fixed order (for fingerprints).
  std::string FingerprintBytes() const;
  int num_files() const { return static_cast<int>(files_.size()); }

 private:
  SafetensorsCheckpoint() = default;

  std::string index_json_;  // empty for a single file
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*, std::less<>> by_name_;
};

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_SAFETENSORS_H_
