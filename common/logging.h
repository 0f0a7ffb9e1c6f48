// Logging and CHECKs. Abseil 20220623 has no absl/log, so glog sits behind this header;
// code includes only this file, so a move to absl/log is local to it.
// CHECK is for programmer errors only, never for input or I/O (those return absl::Status).
#ifndef KVSPAN_COMMON_LOGGING_H_
#define KVSPAN_COMMON_LOGGING_H_

#include <glog/logging.h>  // IWYU pragma: export

namespace kvspan {

// Sets up logging for a binary: to stderr, program name from argv0. Call once from main.
void InitLogging(const char* argv0);

}  // namespace kvspan

#endif  // KVSPAN_COMMON_LOGGING_H_
