// MetricsRegistry: counters, gauges and histograms rendered in the Prometheus text
// exposition format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).
// A metric is a family (one name, HELP text, type, label names fixed at registration) of
// children, one per tuple of label values, made on first use. Families are registered at
// start-up; values are updated from any thread; Render() is what GET /metrics serves.
//
// Thread-safe: every method of every class here may be called concurrently. Counters and
// gauges are lock-free atomics; a histogram observation takes its own short mutex (so a
// scrape sees its buckets, sum and count consistent); Family::With takes the family's
// mutex (callers on a hot path keep the returned reference: children live as long as the
// registry).
#ifndef KVSPAN_COMMON_METRICS_H_
#define KVSPAN_COMMON_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace kvspan {

// A monotonic total.
class Counter {
 public:
  // REQUIRES: delta >= 0.
  void Add(double delta = 1) { value_.fetch_add(delta, std::memory_order_relaxed); }
  // For a total kept elsewhere (e.g. a worker's stats) and copied at scrape time.
  // REQUIRES: total never decreases.
  void MirrorTotal(double total) { value_.store(total, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into fixed buckets (upper bounds, ascending; +Inf is implicit).
class Histogram {
 public:
  // REQUIRES: `bounds` strictly ascending and finite.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<int64_t> cumulative;  // [bounds.size() + 1]: count <= bound, last = +Inf
    double sum = 0;
    int64_t count = 0;
  };
  Snapshot Take() const;

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<int64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, not cumulative
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
};

// The children of one metric name.
template <typename M>
class Family {
 public:
  // The child for `label_values` (one per label name, in order), made on first use.
  // REQUIRES: label_values.size() == the family's label names' size (CHECKed).
  M& With(const std::vector<std::string>& label_values);
  // The child of a family without labels.
  M& Get() { return With({}); }

 private:
  friend class MetricsRegistry;
  Family(std::vector<std::string> label_names, std::function<std::unique_ptr<M>()> make)
      : label_names_(std::move(label_names)), make_(std::move(make)) {}

  const std::vector<std::string> label_names_;
  const std::function<std::unique_ptr<M>()> make_;
  mutable std::mutex mu_;
  // Sorted by label values, so the rendered text is deterministic.
  std::map<std::vector<std::string>, std::unique_ptr<M>> children_ ABSL_GUARDED_BY(mu_);
};

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Register a family; the reference lives as long as the registry. REQUIRES (CHECKed):
  // `name` matches [a-zA-Z_:][a-zA-Z0-9_:]* and is new; each label name matches
  // [a-zA-Z_][a-zA-Z0-9_]*, is not reserved (`le`, or a leading "__"), and is distinct.
  Family<Counter>& AddCounter(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names = {});
  // REQUIRES: `bounds` as Histogram's.
  Family<Histogram>& AddHistogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                                  std::vector<std::string> label_names = {});

  // `collect` runs at the start of every Render(), in registration order: where gauges
  // and mirrored totals are read from their owners. It must not call Render().
  void AddCollector(std::function<void()> collect);

  // The exposition text: for each family in registration order, `# HELP`, `# TYPE`, then
  // one line per sample (children sorted by label values). A family without children
  // renders only its HELP and TYPE lines.
  std::string Render() const;

 private:
  struct Entry;
  Entry& Register(const std::string& name, const std::string& help, const char* type,
                  const std::vector<std::string>& label_names);

  mutable std::mutex mu_;  // held for registration and for a whole Render (serializes scrapes)
  std::vector<std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> collectors_ ABSL_GUARDED_BY(mu_);
};

// Bucket bounds start, start * factor, ... (`count` of them). REQUIRES: start > 0,
// factor > 1, count >= 1.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// A sample value as the format writes it: shortest round-trip decimal, "+Inf", "-Inf", "NaN".
std::string FormatMetricValue(double value);

}  // namespace kvspan

#endif  // KVSPAN_COMMON_METRICS_H_
