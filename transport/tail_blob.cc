#include "transport/tail_blob.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "xxhash.h"

namespace kvspan::transport {
namespace {

constexpr uint16_t kFlagQueries = 1;

void PutU16(std::string* out, uint16_t v) { out->append(reinterpret_cast<const char*>(&v), sizeof(v)); }
void PutU32(std::string* out, uint32_t v) { out->append(reinterpret_cast<const char*>(&v), sizeof(v)); }
void PutFloats(std::string* out, absl::Span<const float> v) {
  out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

template <typename T>
T Read(absl::string_view bytes, int64_t at) {
  T v;
  std::memcpy(&v, bytes.data() + at, sizeof(T));
  return v;
}

int64_t QueryFloats(const TailExpectation& e) {
  return e.with_queries ? int64_t{e.num_layers} * e.num_tokens * e.num_heads * e.head_dim : 0;
}
int64_t KvFloats(const TailExpectation& e) { return int64_t{e.num_layers} * e.num_tokens * e.num_kv_heads * e.head_dim; }

}  // namespace

std::string SerializeTail(const model::DenseRows& rows, absl::Span<const float> logits) {
  std::string out;
  out.reserve(kTailHeaderBytes + (logits.size() + rows.k.size() + rows.v.size() + rows.q.size()) * sizeof(float) + 8);
  out.append(kTailMagic, 4);
  PutU16(&out, kTailVersion);
  PutU16(&out, rows.q.empty() ? 0 : kFlagQueries);
  for (int v : {rows.num_layers, rows.num_kv_heads, rows.num_heads, rows.head_dim, rows.first_position,
                rows.num_tokens, static_cast<int>(logits.size())}) {
    PutU32(&out, static_cast<uint32_t>(v));
  }
  PutFloats(&out, logits);
  PutFloats(&out, rows.k);
  PutFloats(&out, rows.v);
  PutFloats(&out, rows.q);
  const uint64_t checksum = XXH3_64bits(out.data(), out.size());
  out.append(reinterpret_cast<const char*>(&checksum), sizeof(checksum));
  return out;
}

int64_t TailBytes(const TailExpectation& e) {
  return kTailHeaderBytes + (e.vocab_size + 2 * KvFloats(e) + QueryFloats(e)) * int64_t{sizeof(float)} + 8;
}

absl::StatusOr<TailContents> ParseTail(absl::string_view bytes, const TailExpectation& e) {
  const int64_t want = TailBytes(e);
  if (static_cast<int64_t>(bytes.size()) != want) {
    return absl::DataLossError(absl::StrCat("tail blob of ", bytes.size(), " bytes, want ", want));
  }
  const uint64_t checksum = Read<uint64_t>(bytes, want - 8);
  if (checksum != XXH3_64bits(bytes.data(), want - 8)) return absl::DataLossError("tail blob checksum mismatch");
  if (std::memcmp(bytes.data(), kTailMagic, 4) != 0 || Read<uint16_t>(bytes, 4) != kTailVersion) {
    return absl::DataLossError("tail blob: bad magic or version");
  }
  const bool queries = (Read<uint16_t>(bytes, 6) & kFlagQueries) != 0;
  const int fields[7] = {e.num_layers, e.num_kv_heads, e.num_heads, e.head_dim, e.first_position, e.num_tokens,
                         e.vocab_size};
  static constexpr const char* kNames[7] = {"num_layers", "num_kv_heads", "num_heads", "head_dim",
                                            "first_position", "num_tokens", "vocab_size"};
  for (int i = 0; i < 7; ++i) {
    const uint32_t got = Read<uint32_t>(bytes, 8 + 4 * i);
    if (got != static_cast<uint32_t>(fields[i])) {
      return absl::DataLossError(absl::StrCat("tail blob: ", kNames[i], " ", got, ", want ", fields[i]));
    }
  }
  if (queries != e.with_queries) return absl::DataLossError("tail blob: queries flag differs from the policy's");
  TailContents t;
  model::DenseRows& r = t.rows;
  r.num_layers = e.num_layers;
  r.num_kv_heads = e.num_kv_heads;
  r.num_heads = e.num_heads;
  r.head_dim = e.head_dim;
  r.first_position = e.first_position;
  r.num_tokens = e.num_tokens;
  int64_t at = kTailHeaderBytes;
  auto take = [&](std::vector<float>* v, int64_t n) {
    v->resize(n);
    std::memcpy(v->data(), bytes.data() + at, n * sizeof(float));
    at += n * static_cast<int64_t>(sizeof(float));
  };
  take(&t.logits, e.vocab_size);
  take(&r.k, KvFloats(e));
  take(&r.v, KvFloats(e));
  take(&r.q, QueryFloats(e));
  return t;
}

}  // namespace kvspan::transport
