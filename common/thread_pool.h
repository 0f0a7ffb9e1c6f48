// A fixed pool of worker threads for data-parallel loops (attention heads, rows of a
// matrix). The calling thread takes part in the work, so ThreadPool(1) runs inline.
// Thread-safe: ParallelFor may be called from several threads at once; each call
// blocks until all of its iterations have returned.
#ifndef KVSPAN_COMMON_THREAD_POOL_H_
#define KVSPAN_COMMON_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"

namespace kvspan {

class ThreadPool {
 public:
  // REQUIRES: num_threads >= 1 (the caller counts as one; num_threads - 1 are started).
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(i) once for every i in [0, n), spread over the pool in contiguous chunks
  // of `grain` iterations; returns when all calls have returned. fn must not throw.
  void ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> fn, int64_t grain = 1);

 private:
  struct Job;
  void WorkerLoop();
  static void RunChunks(Job* job);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job*> queue_;  // guarded by mu_
  bool stop_ = false;       // guarded by mu_
  std::vector<std::thread> workers_;
};

// Threads to use when none is configured: hardware concurrency, at least 1.
int DefaultNumThreads();

}  // namespace kvspan

#endif  // KVSPAN_COMMON_THREAD_POOL_H_
