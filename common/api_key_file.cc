#include "common/api_key_file.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace kvspan {

absl::StatusOr<std::vector<std::string>> ParseApiKeys(absl::string_view text) {
  std::vector<std::string> keys;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    for (char c : line) {
      if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError(absl::StrCat("API key file line ", line_number, ": a key holds whitespace"));
      }
    }
    keys.emplace_back(line);
  }
  if (keys.empty()) return absl::InvalidArgumentError("the API key file holds no key");
  return keys;
}

absl::StatusOr<std::vector<std::string>> LoadApiKeyFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  absl::StatusOr<std::vector<std::string>> keys = ParseApiKeys(text);
  if (!keys.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", keys.status().message()));
  return keys;
}

}  // namespace kvspan
