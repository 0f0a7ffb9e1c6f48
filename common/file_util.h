// Whole-file helpers (config files, tokenizer.json, test fixtures). Thread-safe.
#ifndef KVSPAN_COMMON_FILE_UTIL_H_
#define KVSPAN_COMMON_FILE_UTIL_H_

#include <string>

#include "absl/status/statusor.h"

namespace kvspan {

// The whole file. NotFound when it does not exist, the errno-derived code for another
// open error, DataLoss for a read error.
absl::StatusOr<std::string> ReadFile(const std::string& path);

bool FileExists(const std::string& path);

}  // namespace kvspan

#endif  // KVSPAN_COMMON_FILE_UTIL_H_
