// libFuzzer target for the span decoder (kvcache/span_format.h); bench/run_fuzz.sh builds
// and runs it with clang. Input: one mode byte, then the candidate span bytes.
//   mode & 1 == 0: parse the bytes as given (checksum first: mostly rejected early);
//   mode & 1 == 1: overwrite the last 8 bytes with the right checksum first, so the
//                  structural checks behind the checksum are what the fuzzer explores.
// Properties checked (abort on violation, which libFuzzer reports as a crash):
//   - ParseSpan fails only with DataLoss or Unimplemented, never reads out of bounds (ASan);
//   - a parsed span passes ValidateSpan, decodes (shared blocks through their source),
//     has SerializedSize == serialized size, re-parses to an equal Span, and (when its
//     minor is the one the writer picks: 0 without shared blocks, 1 with) re-serializes to
//     the same bytes.
// Built with -DKVSPAN_FUZZ_SEED_WRITER it is instead a plain program that writes a seed
// corpus of valid spans (mode byte 1 + bytes) into the directory given as argv[1].
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kvcache/span_format.h"

namespace {

using kvspan::kvcache::ParseSpan;
using kvspan::kvcache::SerializedSize;
using kvspan::kvcache::SerializeSpan;
using kvspan::kvcache::Span;

void Fail(const char* what) {
  std::fprintf(stderr, "fuzz_span_decode: property violated: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) && bytes.size() >= kvspan::kvcache::kSpanChecksumBytes) {
    const size_t body = bytes.size() - kvspan::kvcache::kSpanChecksumBytes;
    const uint64_t sum =
        kvspan::kvcache::SpanChecksum(absl::string_view(bytes.data(), body));
    std::memcpy(bytes.data() + body, &sum, sizeof(sum));
  }
  const absl::StatusOr<Span> span = ParseSpan(bytes);
  if (!span.ok()) {
    const absl::StatusCode code = span.status().code();
    if (code != absl::StatusCode::kDataLoss && code != absl::StatusCode::kUnimplemented) {
      Fail("unexpected status code");
    }
    return 0;
  }
  if (!kvspan::kvcache::ValidateSpan(*span).ok()) Fail("parsed span fails ValidateSpan");
  const kvspan::kvcache::SpanGeometry& g = span->header.geometry;
  for (int l = 0; l < g.num_layers; ++l) {
    for (int h = 0; h < g.num_kv_heads; ++h) {
      const std::vector<kvspan::kvcache::EntryBlock>& blocks = span->resolved_head(l, h).blocks;
      for (size_t b = 0; b < blocks.size(); ++b) {
        // Shared blocks decode through their source block (the same path attention uses).
        const size_t want = static_cast<size_t>(blocks[b].num_entries()) * blocks[b].head_dim;
        const int i = static_cast<int>(b);
        if (kvspan::kvcache::DecodeSpanBlockKeys(*span, l, h, i).size() != want ||
            kvspan::kvcache::DecodeSpanBlockValues(*span, l, h, i).size() != want) {
          Fail("decoded size");
        }
      }
    }
  }
  const std::string again = SerializeSpan(*span);
  if (static_cast<int64_t>(again.size()) != SerializedSize(*span)) Fail("SerializedSize");
  const absl::StatusOr<Span> reparsed = ParseSpan(again);
  if (!reparsed.ok() || !(*reparsed == *span)) Fail("re-parse differs");
  // Canonical: an input whose minor is the one the writer picks for its content (0 without
  // shared blocks, 1 with) re-serializes to the same bytes.
  uint16_t minor, written_minor;
  std::memcpy(&minor, bytes.data() + 6, sizeof(minor));
  std::memcpy(&written_minor, again.data() + 6, sizeof(written_minor));
  if (minor == written_minor && again != bytes) Fail("re-serialization is not bit-exact");
  return 0;
}

#ifdef KVSPAN_FUZZ_SEED_WRITER
#include <cmath>
#include <vector>

#include "kvcache/testing/random_span.h"

int main(int argc, char** argv) {
  using namespace kvspan::kvcache;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SEED_DIR\n", argv[0]);
    return 2;
  }
  std::vector<Span> spans;
  int seed = 1;
  for (const Codec codec :
       {Codec::kBF16, Codec::kFP16, Codec::kInt8, Codec::kInt4, Codec::kInt2}) {
    for (const SpanGeometry& g : {SpanGeometry{1, 1, 4, 2}, SpanGeometry{2, 2, 5, 4},
                                  SpanGeometry{2, 1, 16, 8}}) {
      testing::RandomSpanOptions o;
      o.geometry = g;
      o.codec = {codec, 3};
      o.span_index = seed % 3;
      o.seed = seed++;
      o.model_fingerprint = "m";
      o.policy = "p";
      spans.push_back(testing::RandomSpan(o).value());
    }
  }
  // Mixed precision with a merged entry, an evicted head and a shared head.
  testing::RandomSpanOptions o;
  o.geometry = {2, 2, 6, 4};
  Span span = testing::RandomSpan(o).value();
  const std::vector<int32_t> positions = {0, 2, 3};
  const std::vector<float> log_counts = {std::log(2.0f), 0.0f, 0.0f};
  const std::vector<float> kv = testing::RandomFloats(18, 5, 1.0f);
  span.head(0, 1) = EncodeMixedHead({{Codec::kInt8, 2}, {Codec::kInt2, 4}},
                                    {6, positions, log_counts, kv, kv},
                                    std::vector<uint8_t>{1, 0, 1})
                        .value();
  span.head(1, 0).blocks.clear();
  span.head(1, 1).blocks.clear();
  span.head(1, 1).shared_from_layer = 0;
  spans.push_back(span);
  // Shared blocks of both kinds (minor 1): keys shared with own values, keys and values
  // shared with scales.
  spans.push_back(testing::SharedBlockSpan());

  for (size_t i = 0; i < spans.size(); ++i) {
    if (!ValidateSpan(spans[i]).ok()) return 1;
    const std::string path = std::string(argv[1]) + "/seed_" + std::to_string(i);
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) {
      std::perror(path.c_str());
      return 1;
    }
    const std::string bytes = "\x01" + SerializeSpan(spans[i]);
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  }
  std::printf("wrote %zu seeds to %s\n", spans.size(), argv[1]);
  return 0;
}
#endif  // KVSPAN_FUZZ_SEED_WRITER
