// The helpers bench/serve_bench.h declares for all four parts.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_format.h"
#include "bench/serve_bench.h"

namespace kvspan::bench {

std::vector<int32_t> RandomIds(uint64_t seed, uint64_t stream, int num_tokens, int vocab_size) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  std::mt19937_64 rng(seq);
  std::uniform_int_distribution<int32_t> id(3, std::max(3, vocab_size - 1));
  std::vector<int32_t> ids(std::max(0, num_tokens));
  for (int32_t& v : ids) v = id(rng);
  return ids;
}

kvspan::v1::GenerateRequest IdsRequest(const std::vector<int32_t>& ids, int max_tokens,
                                       const std::string& policy, const std::string& tenant) {
  kvspan::v1::GenerateRequest request;
  request.mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
  request.mutable_sampling()->set_temperature(0);
  request.set_max_tokens(max_tokens);
  request.set_policy(policy);
  request.set_tenant(tenant);
  return request;
}

double Quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * values.size()));
  return values[std::clamp<size_t>(rank, 1, values.size()) - 1];
}

absl::Status RunOnThreads(int n, const std::function<absl::Status(int)>& fn) {
  std::mutex mu;
  absl::Status first_error;  // guarded by mu
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      absl::Status s = fn(i);
      std::lock_guard<std::mutex> lock(mu);
      if (first_error.ok()) first_error = s;
    });
  }
  for (std::thread& t : threads) t.join();
  return first_error;
}

std::vector<std::string> SplitTopLevel(const std::string& list) {
  std::vector<std::string> parts;
  std::string current;
  int depth = 0;
  for (char c : list) {
    if (c == ',' && depth == 0) {
      if (!current.empty()) parts.push_back(current);
      current.clear();
      continue;
    }
    depth += c == '(' ? 1 : c == ')' ? -1 : 0;
    current.push_back(c);
  }
  if (!current.empty()) parts.push_back(current);
  return parts;
}

namespace {

// One CSV record: fields split at commas outside double quotes ("" is a quote).
std::vector<std::string> CsvFields(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '"' && quoted && i + 1 < line.size() && line[i + 1] == '"') {
      fields.back().push_back('"');
      ++i;
    } else if (c == '"') {
      quoted = !quoted;
    } else if (c == ',' && !quoted) {
      fields.emplace_back();
    } else {
      fields.back().push_back(c);
    }
  }
  return fields;
}

}  // namespace

std::string QualitySummary(const std::string& path, const std::string& model,
                           const std::string& policy) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return "n/a";
  const std::vector<std::string> header = CsvFields(line);
  auto column = [&](const std::string& name) {
    return static_cast<size_t>(std::find(header.begin(), header.end(), name) - header.begin());
  };
  const size_t model_col = column("model"), policy_col = column("policy");
  if (policy_col == header.size()) return "n/a";
  std::vector<std::string> match;  // a row for `model` wins over one for another model
  while (std::getline(in, line)) {
    std::vector<std::string> row = CsvFields(line);
    if (row.size() != header.size() || row[policy_col] != policy) continue;
    const bool same_model = model_col < row.size() && row[model_col] == model;
    if (match.empty() || same_model) match = std::move(row);
    if (same_model) break;
  }
  if (match.empty()) return "n/a";
  auto field = [&](const char* name) {
    const size_t c = column(name);
    return c < match.size() && !match[c].empty() ? match[c] : std::string("n/a");
  };
  return absl::StrFormat("%s: bytes/token %s, ppl %s%%, top-1 %s, greedy match %s",
                         field("model"), field("bytes_per_token"), field("ppl_delta_pct"),
                         field("top1_agreement"), field("greedy_match"));
}

}  // namespace kvspan::bench
