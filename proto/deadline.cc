#include "proto/deadline.h"

namespace kvspan::proto {

std::chrono::steady_clock::time_point SteadyDeadline(const grpc::ServerContextBase& context) {
  const auto deadline = context.deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return std::chrono::steady_clock::time_point::max();
  }
  return std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                deadline - std::chrono::system_clock::now());
}

std::chrono::system_clock::time_point SystemDeadline(std::chrono::steady_clock::time_point deadline) {
  if (deadline == std::chrono::steady_clock::time_point::max()) return std::chrono::system_clock::time_point::max();
  return std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                deadline - std::chrono::steady_clock::now());
}

}  // namespace kvspan::proto
