#include "model/testing/safetensors_writer.h"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/float16.h"
#include "nlohmann/json.hpp"

namespace kvspan::model::testing {

int64_t TensorSpec::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorSpec>& specs,
                              absl::FunctionRef<void(const TensorSpec&, absl::Span<float>)> fill) {
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  int64_t offset = 0;
  for (const TensorSpec& s : specs) {
    const int64_t size = s.num_elements() * DTypeSizeBytes(s.dtype);
    header[s.name] = {{"dtype", std::string(DTypeName(s.dtype))}, {"shape", s.shape}, {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot create ", path));
  bool ok = true;
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  ok &= std::fwrite(len, 1, 8, f) == 8;
  ok &= std::fwrite(text.data(), 1, text.size(), f) == text.size();
  std::vector<float> values;
  std::vector<uint8_t> bytes;
  for (const TensorSpec& s : specs) {
    const int64_t n = s.num_elements();
    values.assign(n, 0.0f);
    fill(s, absl::MakeSpan(values));
    bytes.resize(n * DTypeSizeBytes(s.dtype));
    for (int64_t i = 0; i < n; ++i) {
      uint8_t* dst = bytes.data() + i * DTypeSizeBytes(s.dtype);
      switch (s.dtype) {
        case DType::kF32: std::memcpy(dst, &values[i], 4); break;
        case DType::kBF16: {
          const uint16_t h = FloatToBf16(values[i]);
          std::memcpy(dst, &h, 2);
          break;
        }
        case DType::kF16: {
          const uint16_t h = FloatToHalf(values[i]);
          std::memcpy(dst, &h, 2);
          break;
        }
        case DType::kI32: {
          const int32_t v = static_cast<int32_t>(std::lround(values[i]));
          std::memcpy(dst, &v, 4);
          break;
        }
        case DType::kI64: {
          const int64_t v = std::llround(values[i]);
          std::memcpy(dst, &v, 8);
          break;
        }
      }
    }
    ok &= std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  }
  ok &= std::fclose(f) == 0;
  if (!ok) return absl::InternalError(absl::StrCat("error writing ", path));
  return absl::OkStatus();
}

absl::Status WriteSafetensors(const std::string& path, const std::map<std::string, HostTensor>& tensors,
                              DType dtype) {
  std::vector<TensorSpec> specs;
  for (const auto& [name, t] : tensors) specs.push_back({name, dtype, t.shape});
  return WriteSafetensors(path, specs, [&](const TensorSpec& s, absl::Span<float> out) {
    const std::vector<float>& v = tensors.at(s.name).values;
    std::copy(v.begin(), v.begin() + std::min(v.size(), out.size()), out.begin());
  });
}

}  // namespace kvspan::model::testing
