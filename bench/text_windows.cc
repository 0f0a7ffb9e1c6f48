#include "bench/text_windows.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace kvspan::bench {

absl::StatusOr<std::vector<std::vector<int32_t>>> TextWindows(const model::Tokenizer& tok, const std::string& path,
                                                              int windows, int window_tokens) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const int64_t per = window_tokens - 1;
  const std::vector<int32_t> ids =
      tok.Encode(text.substr(0, std::min<size_t>(text.size(), size_t{16} * windows * window_tokens)));
  if (static_cast<int64_t>(ids.size()) < windows * per) {
    return absl::InvalidArgumentError(absl::StrCat("--text has ", ids.size(), " tokens, need ", windows * per));
  }
  std::vector<std::vector<int32_t>> out;
  for (int w = 0; w < windows; ++w) {
    std::vector<int32_t> win = {tok.bos_id().value_or(0)};
    win.insert(win.end(), ids.begin() + w * per, ids.begin() + (w + 1) * per);
    out.push_back(std::move(win));
  }
  return out;
}

}  // namespace kvspan::bench
