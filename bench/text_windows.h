// Held-out evaluation windows cut from a text file, the one rule weights_quality_bench and
// bench/peers/kvspan_ids share: the text's first 16 · windows · window_tokens bytes
// encoded, then `windows` consecutive windows of bos + (window_tokens - 1) tokens.
#ifndef KVSPAN_BENCH_TEXT_WINDOWS_H_
#define KVSPAN_BENCH_TEXT_WINDOWS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tokenizer.h"

namespace kvspan::bench {

// REQUIRES: windows >= 1, window_tokens >= 2. Errors: ReadFile's for `path`;
// InvalidArgument when the text holds fewer than windows · (window_tokens - 1) tokens.
absl::StatusOr<std::vector<std::vector<int32_t>>> TextWindows(const model::Tokenizer& tok, const std::string& path,
                                                              int windows, int window_tokens);

}  // namespace kvspan::bench

#endif  // KVSPAN_BENCH_TEXT_WINDOWS_H_
