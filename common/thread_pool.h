// A fixed pool of worker threads for data-parallel loops (attention heads, rows of a
// matrix). The calling thread takes part in the work, so ThreadPool(1) runs inline.
// Thread-safe: ParallelFor may be called from several threads at once; each call
// blocks until all of its iterations have returned. An idle worker, and a caller waiting
// for workers to finish its job, poll for up to spin_micros before sleeping on a condition
// variable: a 1B decode step makes 81 short calls, and a futex wake-up per call left a core
// idle for its latency each time (docs/performance.md, "The thread pool polls before it
// sleeps").
#ifndef KVSPAN_COMMON_THREAD_POOL_H_
#define KVSPAN_COMMON_THREAD_POOL_H_

#include <atomic>
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
  // How long a thread polls for work (or for its job's end) before it sleeps, by default.
  static constexpr int kDefaultSpinMicros = 50;

  // REQUIRES: num_threads >= 1 (the caller counts as one; num_threads - 1 are started);
  // spin_micros >= 0 (0: sleep at once).
  explicit ThreadPool(int num_threads, int spin_micros = kDefaultSpinMicros);
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
  // Polls done() until it is true or spin_micros_ have passed.
  template <class Done>
  void SpinUntil(const Done& done) const;

  const int spin_micros_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job*> queue_;  // guarded by mu_
  std::atomic<int64_t> queued_{0};  // queue_.size(), written under mu_, polled by idle workers
  bool stop_ = false;       // guarded by mu_
  std::vector<std::thread> workers_;
};

// Threads to use when none is configured: hardware concurrency, at least 1.
int DefaultNumThreads();

}  // namespace kvspan

#endif  // KVSPAN_COMMON_THREAD_POOL_H_
