// Status propagation macros. Abseil 20220623 ships none; these carry the names that
// Google code and later Abseil-based code bases use, so an upgrade is a rename.
#ifndef KVSPAN_COMMON_STATUS_MACROS_H_
#define KVSPAN_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Evaluates `expr` (an absl::Status); returns it from the enclosing function if not OK.
#define RETURN_IF_ERROR(expr)                                  \
  do {                                                         \
    ::absl::Status kvspan_status_ = (expr);                    \
    if (!kvspan_status_.ok()) return kvspan_status_;           \
  } while (0)

#define KVSPAN_CONCAT_INNER_(a, b) a##b
#define KVSPAN_CONCAT_(a, b) KVSPAN_CONCAT_INNER_(a, b)

// ASSIGN_OR_RETURN(lhs, expr): evaluates `expr` (an absl::StatusOr<T>); on error returns
// its status, otherwise move-assigns the value to `lhs` (which may be a declaration).
#define ASSIGN_OR_RETURN(lhs, expr) \
  KVSPAN_ASSIGN_OR_RETURN_IMPL_(KVSPAN_CONCAT_(kvspan_statusor_, __LINE__), lhs, expr)
#define KVSPAN_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return statusor.status();            \
  lhs = std::move(statusor).value()

#endif  // KVSPAN_COMMON_STATUS_MACROS_H_
