// The API key file of `kvspan serve --api-key-file` and `kvspan client --api-key-file`:
// one key per line; surrounding whitespace is trimmed, empty lines and lines starting with
// '#' are ignored. A key is sent as `Bearer <key>`, so it may not contain whitespace.
// Pure functions: thread-safe.
#ifndef KVSPAN_COMMON_API_KEY_FILE_H_
#define KVSPAN_COMMON_API_KEY_FILE_H_

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace kvspan {

// The keys in `text`, in file order. InvalidArgument when there is none, or when a key
// holds whitespace (naming the line).
absl::StatusOr<std::vector<std::string>> ParseApiKeys(absl::string_view text);

// ParseApiKeys of the file at `path`; ReadFile's error (NotFound, ...) when it cannot be read.
absl::StatusOr<std::vector<std::string>> LoadApiKeyFile(const std::string& path);

}  // namespace kvspan

#endif  // KVSPAN_COMMON_API_KEY_FILE_H_
