#include "common/metrics.h"

#include <cmath>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace kvspan {
namespace {

TEST(MetricsTest, RendersTheExpositionFormatExactly) {
  MetricsRegistry registry;
  registry.AddCounter("kvspan:requests_total", "Requests.\nSecond \\ line.", {"code"}).With({"OK"}).Add(3);
  Family<Counter>& errors = registry.AddCounter("kvspan:errors_total", "Errors.", {"code", "path"});
  errors.With({"b\"q\\x\ny", "/z"}).Add(1);
  errors.With({"a", "/z"}).Add(2.5);
  registry.AddGauge("kvspan:running", "Running.").Get().Set(-4);
  Histogram& h = registry.AddHistogram("kvspan:latency_seconds", "Latency.", {0.1, 1, 2.5}, {"policy"}).With({"p"});
  h.Observe(0.1);   // le="0.1" counts a value equal to its bound
  h.Observe(0.5);
  h.Observe(0.75);
  h.Observe(100);   // only +Inf
  registry.AddCounter("kvspan:unused_total", "No child yet.");
  EXPECT_EQ(registry.Render(),
            "# HELP kvspan:requests_total Requests.\\nSecond \\\\ line.\n"
            "# TYPE kvspan:requests_total counter\n"
            "kvspan:requests_total{code=\"OK\"} 3\n"
            "# HELP kvspan:errors_total Errors.\n"
            "# TYPE kvspan:errors_total counter\n"
            "kvspan:errors_total{code=\"a\",path=\"/z\"} 2.5\n"
            "kvspan:errors_total{code=\"b\\\"q\\\\x\\ny\",path=\"/z\"} 1\n"
            "# HELP kvspan:running Running.\n"
            "# TYPE kvspan:running gauge\n"
            "kvspan:running -4\n"
            "# HELP kvspan:latency_seconds Latency.\n"
            "# TYPE kvspan:latency_seconds histogram\n"
            "kvspan:latency_seconds_bucket{policy=\"p\",le=\"0.1\"} 1\n"
            "kvspan:latency_seconds_bucket{policy=\"p\",le=\"1\"} 3\n"
            "kvspan:latency_seconds_bucket{policy=\"p\",le=\"2.5\"} 3\n"
            "kvspan:latency_seconds_bucket{policy=\"p\",le=\"+Inf\"} 4\n"
            "kvspan:latency_seconds_sum{policy=\"p\"} 101.35\n"
            "kvspan:latency_seconds_count{policy=\"p\"} 4\n"
            "# HELP kvspan:unused_total No child yet.\n"
            "# TYPE kvspan:unused_total counter\n");
}

TEST(MetricsTest, CollectorsRunBeforeEachRender) {
  MetricsRegistry registry;
  Gauge& g = registry.AddGauge("g", "G.").Get();
  Counter& c = registry.AddCounter("c_total", "C.").Get();
  int calls = 0;
  registry.AddCollector([&] {
    ++calls;
    g.Set(calls * 10);
    c.MirrorTotal(calls);
  });
  registry.Render();
  EXPECT_EQ(registry.Render(), "# HELP g G.\n# TYPE g gauge\ng 20\n# HELP c_total C.\n# TYPE c_total counter\nc_total 2\n");
}

TEST(MetricsTest, FormatsValues) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(1e21), "1e+21");
  EXPECT_EQ(FormatMetricValue(123456789), "123456789");
  EXPECT_EQ(FormatMetricValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatMetricValue(-INFINITY), "-Inf");
  EXPECT_EQ(FormatMetricValue(NAN), "NaN");
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
}

TEST(MetricsTest, ConcurrentUpdatesAreAllCounted) {
  MetricsRegistry registry;
  Family<Counter>& counters = registry.AddCounter("c_total", "C.", {"t"});
  Histogram& h = registry.AddHistogram("h", "H.", {1}).Get();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10000; ++i) {
        counters.With({t % 2 == 0 ? "even" : "odd"}).Add();
        h.Observe(i % 2);
        if (i % 1000 == 0) registry.Render();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counters.With({"even"}).value(), 20000);
  EXPECT_EQ(counters.With({"odd"}).value(), 20000);
  const Histogram::Snapshot s = h.Take();
  EXPECT_EQ(s.count, 40000);
  EXPECT_EQ(s.cumulative, (std::vector<int64_t>{40000, 40000}));
  EXPECT_EQ(s.sum, 20000);
}

TEST(MetricsDeathTest, BadNamesAreProgrammerErrors) {
  MetricsRegistry registry;
  EXPECT_DEATH(registry.AddCounter("1bad", "x"), "bad metric name");
  EXPECT_DEATH(registry.AddHistogram("h", "x", {1}, {"le"}), "bad label name");
  EXPECT_DEATH(registry.AddHistogram("h2", "x", {2, 1}), "ascend");
  registry.AddCounter("ok_total", "x", {"a"});
  EXPECT_DEATH(registry.AddCounter("ok_total", "x"), "twice");
}

}  // namespace
}  // namespace kvspan
