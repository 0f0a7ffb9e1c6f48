#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace kvspan {
namespace {

bool ValidName(const std::string& name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = absl::ascii_isalpha(c) || c == '_' || (allow_colon && c == ':') || (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

// HELP text: backslash and newline escaped. Label values: those and the double quote.
std::string Escape(const std::string& text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

// `{a="x",b="y"}` (with `extra` appended, e.g. le="0.5"), or "" when there is nothing.
std::string LabelText(const std::vector<std::string>& names, const std::vector<std::string>& values,
                      const std::string& extra = "") {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&out, out.empty() ? "" : ",", names[i], "=\"", Escape(values[i], /*quote=*/true), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&out, out.empty() ? "" : ",", extra);
  return out.empty() ? out : absl::StrCat("{", out, "}");
}

}  // namespace

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  CHECK(start > 0 && factor > 1 && count >= 1);
  std::vector<double> bounds;
  for (double b = start; static_cast<int>(bounds.size()) < count; b *= factor) bounds.push_back(b);
  return bounds;
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    CHECK(std::isfinite(bounds_[i])) << "histogram bound " << bounds_[i];
    CHECK(i == 0 || bounds_[i - 1] < bounds_[i]) << "histogram bounds must ascend";
  }
}

void Histogram::Observe(double value) {
  // The first bucket whose bound is >= value (le is "less than or equal"); else +Inf.
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[bucket];
  sum_ += value;
}

Histogram::Snapshot Histogram::Take() const {
  Snapshot s;
  s.bounds = bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  s.cumulative.resize(counts_.size());
  int64_t total = 0;
  for (size_t i = 0; i < counts_.size(); ++i) s.cumulative[i] = total += counts_[i];
  s.count = total;
  s.sum = sum_;
  return s;
}

template <typename M>
M& Family<M>::With(const std::vector<std::string>& label_values) {
  CHECK_EQ(label_values.size(), label_names_.size()) << "wrong number of label values";
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<M>& child = children_[label_values];
  if (child == nullptr) child = make_();
  return *child;
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

struct MetricsRegistry::Entry {
  std::string name;
  std::string help;
  const char* type = "";
  std::vector<std::string> label_names;
  std::unique_ptr<Family<Counter>> counters;
  std::unique_ptr<Family<Gauge>> gauges;
  std::unique_ptr<Family<Histogram>> histograms;
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

MetricsRegistry::Entry& MetricsRegistry::Register(const std::string& name, const std::string& help,
                                                  const char* type, const std::vector<std::string>& label_names) {
  CHECK(ValidName(name, /*allow_colon=*/true)) << "bad metric name '" << name << "'";
  for (size_t i = 0; i < label_names.size(); ++i) {
    const std::string& label = label_names[i];
    CHECK(ValidName(label, /*allow_colon=*/false) && label != "le" && label.rfind("__", 0) != 0)
        << "bad label name '" << label << "' of " << name;
    for (size_t j = 0; j < i; ++j) CHECK_NE(label, label_names[j]) << "duplicate label of " << name;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& e : entries_) CHECK_NE(e->name, name) << "metric registered twice";
  auto entry = std::make_unique<Entry>();
  entry->name = name;
  entry->help = help;
  entry->type = type;
  entry->label_names = label_names;
  entries_.push_back(std::move(entry));
  return *entries_.back();
}

Family<Counter>& MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                             std::vector<std::string> label_names) {
  Entry& e = Register(name, help, "counter", label_names);
  e.counters.reset(new Family<Counter>(std::move(label_names), [] { return std::make_unique<Counter>(); }));
  return *e.counters;
}

Family<Gauge>& MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                                         std::vector<std::string> label_names) {
  Entry& e = Register(name, help, "gauge", label_names);
  e.gauges.reset(new Family<Gauge>(std::move(label_names), [] { return std::make_unique<Gauge>(); }));
  return *e.gauges;
}

Family<Histogram>& MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                                 std::vector<double> bounds, std::vector<std::string> label_names) {
  Histogram check(bounds);  // CHECKs the bounds now, not at first use
  Entry& e = Register(name, help, "histogram", label_names);
  e.histograms.reset(new Family<Histogram>(std::move(label_names),
                                           [bounds] { return std::make_unique<Histogram>(bounds); }));
  return *e.histograms;
}

void MetricsRegistry::AddCollector(std::function<void()> collect) {
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.push_back(std::move(collect));
}

std::string MetricsRegistry::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& collect : collectors_) collect();
  std::string out;
  for (const auto& e : entries_) {
    absl::StrAppend(&out, "# HELP ", e->name, " ", Escape(e->help, /*quote=*/false), "\n");
    absl::StrAppend(&out, "# TYPE ", e->name, " ", e->type, "\n");
    auto scalar = [&](const auto& family) {
      std::lock_guard<std::mutex> family_lock(family.mu_);
      for (const auto& [values, child] : family.children_) {
        absl::StrAppend(&out, e->name, LabelText(e->label_names, values), " ", FormatMetricValue(child->value()),
                        "\n");
      }
    };
    if (e->counters != nullptr) scalar(*e->counters);
    if (e->gauges != nullptr) scalar(*e->gauges);
    if (e->histograms != nullptr) {
      std::lock_guard<std::mutex> family_lock(e->histograms->mu_);
      for (const auto& [values, child] : e->histograms->children_) {
        const Histogram::Snapshot s = child->Take();
        for (size_t i = 0; i < s.cumulative.size(); ++i) {
          const double bound = i < s.bounds.size() ? s.bounds[i] : INFINITY;
          const std::string le = absl::StrCat("le=\"", FormatMetricValue(bound), "\"");
          absl::StrAppend(&out, e->name, "_bucket", LabelText(e->label_names, values, le), " ", s.cumulative[i], "\n");
        }
        absl::StrAppend(&out, e->name, "_sum", LabelText(e->label_names, values), " ", FormatMetricValue(s.sum), "\n");
        absl::StrAppend(&out, e->name, "_count", LabelText(e->label_names, values), " ", s.count, "\n");
      }
    }
  }
  return out;
}

}  // namespace kvspan
