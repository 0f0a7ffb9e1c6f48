// `kvspan serve --http-listen` as its own process: GET /metrics scraped over a real socket
// (httplib::Client) before and after traffic, every counter moving by exactly what the
// traffic did, the text parsed line by line as the Prometheus exposition format, and
// GET /health 200 while serving and 503 while draining after SIGTERM.
#include <signal.h>

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/serve_process.h"

namespace kvspan::tests {
namespace {

using kvspan::testing::TempDir;

const std::string kBinary = KVSPAN_COMMAND;
const std::string kModel = std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown";
constexpr int kSpan = 64;

bool ValidName(const std::string& name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!(std::isalpha(static_cast<unsigned char>(c)) || c == '_' || (allow_colon && c == ':') ||
          (i > 0 && std::isdigit(static_cast<unsigned char>(c))))) {
      return false;
    }
  }
  return true;
}

// One scrape, parsed. Samples are keyed `name{k="v",...}` with the values unescaped.
struct Scrape {
  std::map<std::string, double> samples;
  std::vector<std::string> errors;  // every format violation, with its line
  double Value(const std::string& key) const {
    auto it = samples.find(key);
    return it == samples.end() ? 0 : it->second;  // a labelled child not made yet is 0
  }
};

// The exposition format 0.0.4, line by line: `# HELP name text`, `# TYPE name type`
// (before the family's samples), and samples `name{labels} value`. A histogram's
// samples are name_bucket (with le, cumulative, ending at +Inf == name_count), name_sum
// and name_count.
Scrape Parse(const std::string& text) {
  Scrape out;
  std::map<std::string, std::string> types;
  std::set<std::string> helps;
  std::map<std::string, double> last_bucket;  // series without le -> the last bucket's value
  auto error = [&](const std::string& line, const std::string& what) { out.errors.push_back(what + ": " + line); };
  if (text.empty() || text.back() != '\n') out.errors.push_back("the text does not end with a newline");
  for (absl::string_view view : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    const std::string line(view);
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const std::vector<std::string> parts = absl::StrSplit(line.substr(7), absl::MaxSplits(' ', 1));
      if (parts.size() != 2 || !ValidName(parts[0], true)) {
        error(line, "bad comment");
        continue;
      }
      if (line[2] == 'H') {
        if (!helps.insert(parts[0]).second) error(line, "second HELP");
      } else {
        static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary", "untyped"};
        if (!kTypes.count(parts[1])) error(line, "bad type");
        if (!types.emplace(parts[0], parts[1]).second) error(line, "second TYPE");
      }
      continue;
    }
    if (line[0] == '#') continue;  // other comments are allowed
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    const std::string name = line.substr(0, i);
    if (!ValidName(name, true)) {
      error(line, "bad metric name");
      continue;
    }
    std::vector<std::pair<std::string, std::string>> labels;
    bool ok = true;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (ok && i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          ok = false;
          break;
        }
        std::string label = line.substr(i, eq - i), value;
        if (!ValidName(label, false)) ok = false;
        size_t j = eq + 2;
        for (; ok && j < line.size() && line[j] != '"'; ++j) {
          if (line[j] != '\\') {
            value += line[j];
            continue;
          }
          if (++j >= line.size()) break;
          if (line[j] == 'n') value += '\n';
          else if (line[j] == '\\' || line[j] == '"') value += line[j];
          else ok = false;
        }
        if (j >= line.size()) ok = false;
        labels.emplace_back(label, value);
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) ok = false;
      ++i;  // '}'
    }
    if (!ok || i >= line.size() || line[i] != ' ') {
      error(line, "bad labels");
      continue;
    }
    const std::string value_text = line.substr(i + 1);
    double value = 0;
    if (value_text == "+Inf") {
      value = INFINITY;
    } else if (value_text == "-Inf") {
      value = -INFINITY;
    } else if (value_text == "NaN") {
      value = NAN;
    } else if (value_text.find(' ') != std::string::npos || !absl::SimpleAtod(value_text, &value)) {
      error(line, "bad value (or a timestamp, which kvspan never writes)");
      continue;
    }
    // The family this sample belongs to must have HELP and TYPE before it.
    std::string family = name;
    std::string suffix;
    if (!types.count(name)) {
      for (const char* s : {"_bucket", "_sum", "_count"}) {
        const std::string sfx = s;
        if (name.size() > sfx.size() && name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0) {
          family = name.substr(0, name.size() - sfx.size());
          suffix = sfx;
        }
      }
      if (!types.count(family) || types[family] != "histogram") {
        error(line, "a sample without a TYPE line before it");
        continue;
      }
    }
    if (!helps.count(family)) error(line, "a sample without a HELP line before it");
    std::string key = name, series = family, le;
    for (size_t k = 0; k < labels.size(); ++k) {
      absl::StrAppend(&key, k == 0 ? "{" : ",", labels[k].first, "=\"", labels[k].second, "\"");
      if (labels[k].first == "le") le = labels[k].second;
      else absl::StrAppend(&series, ",", labels[k].first, "=", labels[k].second);
    }
    if (!labels.empty()) key += "}";
    if (!out.samples.emplace(key, value).second) error(line, "a second sample of one series");
    if (suffix == "_bucket") {
      if (le.empty()) error(line, "a bucket without le");
      if (last_bucket.count(series) && value < last_bucket[series]) error(line, "buckets not cumulative");
      last_bucket[series] = le == "+Inf" ? -1.0 - value : value;  // negative: +Inf seen, its count encoded
    } else if (suffix == "_count") {
      if (!last_bucket.count(series) || last_bucket[series] >= 0) error(line, "no +Inf bucket before _count");
      else if (-1.0 - last_bucket[series] != value) error(line, "+Inf bucket != _count");
    }
  }
  for (const auto& [name, type] : types) {
    if (!helps.count(name)) out.errors.push_back("TYPE without HELP: " + name);
  }
  return out;
}

// The parser above finds what it must (so the scrape checks below can fail).
TEST(ExpositionParserTest, FindsEveryKindOfViolation) {
  EXPECT_THAT(Parse("# HELP a A.\n# TYPE a counter\na 1\n").errors, ::testing::IsEmpty());
  EXPECT_THAT(Parse("# HELP a A.\n# TYPE a counter\na{x=\"1\\\"\\n\"} 1\n").errors, ::testing::IsEmpty());
  for (const char* bad : {
           "a 1\n",                                           // no HELP / TYPE
           "# HELP a A.\na 1\n",                             // no TYPE
           "# HELP a A.\n# TYPE a counter\na{x=1} 1\n",     // unquoted label value
           "# HELP a A.\n# TYPE a counter\na{x=\"1\"} one\n",  // bad value
           "# HELP a A.\n# TYPE a counter\na 1 1700000000\n",     // a timestamp
           "# HELP a A.\n# TYPE a counter\na 1",             // no final newline
           "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
           "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
       }) {
    EXPECT_THAT(Parse(bad).errors, ::testing::Not(::testing::IsEmpty())) << bad;
  }
}

class ServeMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServeProcess>(
        kBinary, std::vector<std::string>{"--model", kModel, "--data", dir_.Sub("data"), "--threads", "2",
                                          "--grace-ms", "20000", "--http-listen", "127.0.0.1:0"});
    ASSERT_FALSE(server_->address().empty()) << "kvspan serve did not come up";
    ASSERT_FALSE(server_->http_address().empty()) << "no `kvspan serve: http on` line";
    const size_t colon = server_->http_address().rfind(':');
    int port = 0;
    ASSERT_TRUE(absl::SimpleAtoi(server_->http_address().substr(colon + 1), &port));
    http_ = std::make_unique<httplib::Client>(server_->http_address().substr(0, colon), port);
    http_->set_read_timeout(std::chrono::seconds(10));
    stub_ = server_->NewStub();
  }

  Scrape Metrics() {
    httplib::Result result = http_->Get("/metrics");
    EXPECT_TRUE(result) << httplib::to_string(result.error());
    if (!result) return {};
    EXPECT_EQ(result->status, 200);
    EXPECT_EQ(result->get_header_value("Content-Type"), "text/plain; version=0.0.4");
    Scrape scrape = Parse(result->body);
    EXPECT_THAT(scrape.errors, ::testing::IsEmpty()) << result->body;
    return scrape;
  }

  TempDir dir_;
  std::unique_ptr<ServeProcess> server_;
  std::unique_ptr<httplib::Client> http_;
  std::unique_ptr<v1::Serving::Stub> stub_;
};

TEST_F(ServeMetricsTest, CountersMoveExactlyWithTraffic) {
  httplib::Result health = http_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok");

  const Scrape before = Metrics();
  const std::vector<int32_t> prompt = PromptIds(1, 200);  // 3 full spans of 64 and a tail of 8
  constexpr int kMaxTokens = 8;
  const v1::GenerateRequest request = GreedyRequest(prompt, kMaxTokens, "", "metrics");
  const int64_t puts = StorePutsOk(*stub_);
  const GenerateOutcome cold = RunGenerate(*stub_, request);
  ASSERT_TRUE(cold.status.ok()) << cold.status.error_message();
  ASSERT_GE(WaitForStorePuts(*stub_, puts + 3), puts + 3) << "spans reach the store asynchronously";
  const GenerateOutcome warm = RunGenerate(*stub_, request);
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  EXPECT_EQ(cold.started.store_prompt_tokens(), 0);
  EXPECT_EQ(warm.started.store_prompt_tokens(), 3 * kSpan);
  const GenerateOutcome bad = RunGenerate(*stub_, GreedyRequest({5, 4096}, 4, "", ""));
  ASSERT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  const Scrape after = Metrics();

  auto delta = [&](const std::string& key) { return after.Value(key) - before.Value(key); };
  EXPECT_EQ(delta("kvspan:prompt_tokens_total"), 2 * 200);
  EXPECT_EQ(delta("kvspan:prompt_tokens_cached_total{source=\"store\"}"), 3 * kSpan);
  EXPECT_EQ(delta("kvspan:prompt_tokens_cached_total{source=\"resident\"}"), 0);
  EXPECT_EQ(delta("kvspan:generation_tokens_total"), 2 * kMaxTokens);
  EXPECT_EQ(delta("kvspan:request_success_total{finish_reason=\"max_tokens\"}"), 2);
  EXPECT_EQ(delta("kvspan:request_failure_total{code=\"INVALID_ARGUMENT\"}"), 1);
  for (const char* histogram : {"kvspan:time_to_first_token_seconds", "kvspan:time_per_output_token_seconds",
                                "kvspan:e2e_request_latency_seconds"}) {
    EXPECT_EQ(delta(absl::StrCat(histogram, "_count")), 2) << histogram;
    EXPECT_GT(delta(absl::StrCat(histogram, "_sum")), 0) << histogram;
  }
  const std::string policy = cold.started.policy();
  EXPECT_EQ(delta(absl::StrCat("kvspan:span_bytes_per_token_count{policy=\"", policy, "\"}")), 2);
  // The store: the cold request put its 3 full spans, the warm one loaded them.
  EXPECT_EQ(delta("kvspan:store_spans_loaded_total"), 3);
  EXPECT_GT(delta("kvspan:store_bytes_loaded_total"), 0);
  EXPECT_EQ(delta("kvspan:store_puts_total{result=\"ok\"}"), 3);
  EXPECT_GT(delta("kvspan:store_bytes_put_total"), 0);
  EXPECT_EQ(delta("kvspan:store_puts_total{result=\"failed\"}"), 0);
  EXPECT_EQ(delta("kvspan:store_errors_total"), 0);
  for (const char* cause : {"store_error", "miss", "bad_span"}) {
    EXPECT_EQ(after.Value(absl::StrCat("kvspan:recomputed_spans_total{cause=\"", cause, "\"}")), 0) << cause;
  }
  // Nothing runs now; the gauges are there.
  EXPECT_EQ(after.Value("kvspan:num_requests_running"), 0);
  EXPECT_EQ(after.Value("kvspan:num_requests_waiting"), 0);
  EXPECT_EQ(after.Value("kvspan:num_preemptions_total"), 0);
  EXPECT_TRUE(after.samples.count("kvspan:kv_cache_usage_ratio"));
  EXPECT_TRUE(after.samples.count("kvspan:kv_cache_bytes"));
  EXPECT_TRUE(after.samples.count("kvspan:resident_sessions"));
}

TEST_F(ServeMetricsTest, HealthIs503WhileDrainingAfterSigterm) {
  // A stream long enough to still run when SIGTERM comes.
  GenerateOutcome long_stream;
  std::thread client([&] { long_stream = RunGenerate(*stub_, GreedyRequest(PromptIds(2, 20), 900, "dense", "")); });
  for (int i = 0; i < 600 && Metrics().Value("kvspan:num_requests_running") < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(Metrics().Value("kvspan:num_requests_running"), 1);
  ASSERT_EQ(kill(server_->pid(), SIGTERM), 0);
  std::set<int> statuses;
  for (int i = 0; i < 2000; ++i) {
    httplib::Result health = http_->Get("/health");
    if (!health) break;  // the listener is gone: the node stopped
    statuses.insert(health->status);
    if (health->status == 503) EXPECT_EQ(health->body, "shutting down");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  client.join();
  EXPECT_TRUE(statuses.count(503)) << "never saw 503 while draining";
  EXPECT_TRUE(long_stream.status.ok()) << long_stream.status.error_message();  // drained, not cut
  EXPECT_EQ(server_->Stop(0), 0);  // signal 0 sends nothing: only waits for the exit
}

}  // namespace
}  // namespace kvspan::tests
