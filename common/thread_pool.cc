#include "common/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>

namespace kvspan {

template <class Done>
void ThreadPool::SpinUntil(const Done& done) const {
  if (spin_micros_ == 0) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_micros_);
  do {
    for (int i = 0; i < 64; ++i) {
      if (done()) return;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
  } while (std::chrono::steady_clock::now() < deadline);
}

struct ThreadPool::Job {
  Job(int64_t n, int64_t grain, absl::FunctionRef<void(int64_t)> fn)
      : n(n), grain(grain), fn(fn) {}
  const int64_t n;
  const int64_t grain;
  absl::FunctionRef<void(int64_t)> fn;
  std::atomic<int64_t> next{0};
  // Workers that popped this job and have not yet let go of it: written under the pool's
  // mu_, polled by the caller.
  std::atomic<int> active{0};
  std::condition_variable released;
};

ThreadPool::ThreadPool(int num_threads, int spin_micros) : spin_micros_(std::max(0, spin_micros)) {
  for (int i = 1; i < std::max(1, num_threads); ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks(Job* job) {
  for (;;) {
    const int64_t begin = job->next.fetch_add(job->grain, std::memory_order_relaxed);
    if (begin >= job->n) return;
    const int64_t end = std::min(job->n, begin + job->grain);
    for (int64_t i = begin; i < end; ++i) job->fn(i);
  }
}

void ThreadPool::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (queue_.empty() && !stop_) {
      lock.unlock();
      SpinUntil([this] { return queued_.load(std::memory_order_acquire) > 0; });
      lock.lock();
    }
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ and nothing left
    Job* job = queue_.front();
    queue_.pop_front();
    queued_.store(static_cast<int64_t>(queue_.size()), std::memory_order_relaxed);
    job->active.fetch_add(1, std::memory_order_relaxed);
    lock.unlock();
    RunChunks(job);
    lock.lock();
    if (job->active.fetch_sub(1, std::memory_order_release) == 1) job->released.notify_all();
  }
}

void ThreadPool::ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t chunks = (n + grain - 1) / grain;
  if (workers_.empty() || chunks == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  Job job(n, grain, fn);
  const int64_t helpers = std::min<int64_t>(static_cast<int64_t>(workers_.size()), chunks - 1);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int64_t i = 0; i < helpers; ++i) queue_.push_back(&job);
    queued_.store(static_cast<int64_t>(queue_.size()), std::memory_order_release);
  }
  if (helpers == 1) cv_.notify_one(); else cv_.notify_all();
  RunChunks(&job);
  // All chunks are claimed. Withdraw entries no worker popped, then wait for the
  // workers still running a chunk of this job (they hold a pointer to it, and let go of it
  // under mu_: so the lock is taken again before `job` goes out of scope).
  std::unique_lock<std::mutex> lock(mu_);
  queue_.erase(std::remove(queue_.begin(), queue_.end(), &job), queue_.end());
  queued_.store(static_cast<int64_t>(queue_.size()), std::memory_order_relaxed);
  if (job.active.load(std::memory_order_relaxed) == 0) return;
  lock.unlock();
  SpinUntil([&job] { return job.active.load(std::memory_order_acquire) == 0; });
  lock.lock();
  job.released.wait(lock, [&job] { return job.active.load(std::memory_order_relaxed) == 0; });
}

int DefaultNumThreads() {
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace kvspan
