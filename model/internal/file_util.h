// Small file helpers for the model loader.
#ifndef KVSPAN_MODEL_INTERNAL_FILE_UTIL_H_
#define KVSPAN_MODEL_INTERNAL_FILE_UTIL_H_

#include <string>

#include "absl/status/statusor.h"

namespace kvspan::model::internal {

// The whole file. NotFound when it does not exist; the errno-derived code otherwise.
absl::StatusOr<std::string> ReadFile(const std::string& path);

bool FileExists(const std::string& path);

}  // namespace kvspan::model::internal

#endif  // KVSPAN_MODEL_INTERNAL_FILE_UTIL_H_
