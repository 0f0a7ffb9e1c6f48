#include "common/thread_pool.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace kvspan {
namespace {

TEST(ThreadPoolTest, EveryIndexRunsExactlyOnce) {
  for (int spin : {0, ThreadPool::kDefaultSpinMicros, 100000}) {
    for (int threads : {1, 2, 4}) {
      ThreadPool pool(threads, spin);
      for (int64_t n : {0, 1, 3, 17, 1000}) {
        for (int64_t grain : {1, 4, 64}) {
          std::vector<std::atomic<int>> hits(n);
          pool.ParallelFor(n, [&](int64_t i) { hits[i].fetch_add(1); }, grain);
          for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "i=" << i << " spin " << spin;
        }
      }
    }
  }
}

// Both threads of a 2-thread pool run at once (each chunk waits for the other), whether the
// worker was polling (the calls follow each other closely) or asleep (after a pause longer
// than the spin).
TEST(ThreadPoolTest, WorkerTakesPartPollingOrAsleep) {
  for (int spin : {0, ThreadPool::kDefaultSpinMicros}) {
    ThreadPool pool(2, spin);
    for (int round = 0; round < 40; ++round) {
      if (round % 10 == 9) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      std::atomic<int> arrived{0};
      pool.ParallelFor(2, [&](int64_t) {
        arrived.fetch_add(1);
        while (arrived.load() < 2) std::this_thread::yield();
      });
      ASSERT_EQ(arrived.load(), 2) << "spin " << spin << " round " << round;
    }
  }
}

TEST(ThreadPoolTest, ConcurrentCallersDoNotMixJobs) {
  for (int spin : {0, ThreadPool::kDefaultSpinMicros}) {
    ThreadPool pool(3, spin);
    std::vector<std::thread> callers;
    std::atomic<int64_t> total{0};
    for (int c = 0; c < 4; ++c) {
      callers.emplace_back([&pool, &total, c] {
        for (int round = 0; round < 50; ++round) {
          std::atomic<int64_t> sum{0};
          pool.ParallelFor(100, [&](int64_t i) { sum.fetch_add(i + c); });
          ASSERT_EQ(sum.load(), 4950 + 100 * c);
          total.fetch_add(1);
        }
      });
    }
    for (auto& t : callers) t.join();
    EXPECT_EQ(total.load(), 200) << "spin " << spin;
  }
}

}  // namespace
}  // namespace kvspan
