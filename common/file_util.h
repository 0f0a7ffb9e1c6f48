// Whole-file helpers (config files, tokenizer.json, test fixtures). Thread-safe.
#ifndef KVSPAN_COMMON_FILE_UTIL_H_
#define KVSPAN_COMMON_FILE_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvspan {

// The whole file. NotFound when it does not exist, the errno-derived code for another
// open error, DataLoss for a read error.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes `data` to `path`, replacing it. The errno-derived code (e.g. NotFound for a missing
// directory, PermissionDenied) when it cannot be opened, written or closed.
absl::Status WriteFile(const std::string& path, absl::string_view data);

bool FileExists(const std::string& path);

}  // namespace kvspan

#endif  // KVSPAN_COMMON_FILE_UTIL_H_
