// disagg_bench: a disaggregated cluster (cachestore, prefill, decode workers and a
// frontend, each its own process on 127.0.0.1) against `kvspan serve` on the same model,
// in one run:
//   ttft      time to first token through the frontend vs serve, cold (nothing cached)
//             and warm (the prompt's spans in the store), per prompt length and policy,
//             measured at the client; with the bytes the decode worker received;
//   recovery  a load of concurrent streams over two decode workers, one of them killed
//             with SIGKILL mid-load: how many requests failed (of all, and of those the
//             killed worker held) and how long after the kill the last one ended.
// Writes docs/performance.md, section disagg_bench (or --section).
//   build/bench/disagg_bench --kvspan build/node/kvspan --model models/kvspan-brown
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/doc_section.h"
#include "common/flags.h"
#include "kvspan/v1/transport.grpc.pb.h"
#include "tests/serve_process.h"

namespace kvspan::bench {
namespace {

using Clock = std::chrono::steady_clock;
using tests::ServeProcess;

double Ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

v1::WorkerInfo DecodeInfo(const ServeProcess& p) {
  auto stub = v1::Decode::NewStub(grpc::CreateChannel(p.address(), grpc::InsecureChannelCredentials()));
  v1::WorkerInfo info;
  grpc::ClientContext c;
  c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  (void)stub->Info(&c, v1::WorkerInfoRequest(), &info);
  return info;
}

// One Generate call; the client-side time to its first generated token.
struct Timed {
  grpc::Status status;
  double ttft_ms = 0;
  int store_tokens = 0;
  Clock::time_point end;
};
Timed Call(v1::Serving::Stub& stub, const v1::GenerateRequest& request, int64_t deadline_ms = 600000) {
  Timed t;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  const auto start = Clock::now();
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse m;
  bool first = true;
  while (reader->Read(&m)) {
    if (m.has_started()) t.store_tokens = m.started().store_prompt_tokens();
    if (m.has_tokens() && m.tokens().ids_size() > 0 && first) {
      t.ttft_ms = Ms(start, Clock::now());
      first = false;
    }
  }
  t.status = reader->Finish();
  t.end = Clock::now();
  return t;
}

struct Cluster {
  std::unique_ptr<ServeProcess> store, prefill, frontend;
  std::vector<std::unique_ptr<ServeProcess>> decode;
  std::unique_ptr<v1::Serving::Stub> stub;
};

Cluster StartCluster(const std::string& kvspan, const std::string& model, const std::string& dir, int decode_workers,
                     const std::string& threads) {
  Cluster c;
  c.store = ServeProcess::Cachestore(kvspan, dir + "/store");
  c.prefill = ServeProcess::Role(kvspan, "prefill", {"--model", model, "--store", c.store->address(), "--threads", threads});
  std::string decode_list;
  for (int i = 0; i < decode_workers; ++i) {
    c.decode.push_back(ServeProcess::Role(kvspan, "decode",
                                          {"--model", model, "--store", c.store->address(), "--threads", threads}));
    decode_list += (decode_list.empty() ? "" : ",") + c.decode.back()->address();
  }
  c.frontend = ServeProcess::Role(kvspan, "frontend",
                                  {"--model", model, "--store", c.store->address(), "--prefill",
                                   c.prefill->address(), "--decode", decode_list, "--probe-interval-ms", "100"});
  c.stub = c.frontend->NewStub();
  return c;
}

int Main(int argc, char** argv) {
  std::string kvspan = "build/node/kvspan";
  std::string model = "models/kvspan-brown";
  std::string out = "docs/performance.md";
  std::string section = "disagg_bench";
  std::string lengths_text = "1024";
  std::string policies_text = "int4(g=32);bf16";
  std::string threads = "2";
  std::string parts = "ttft,recovery";
  int reps = 2;
  int recovery_requests = 48;
  int recovery_concurrency = 12;
  int recovery_tokens = 300;
  FlagSet flags("disagg_bench", "TTFT of a disaggregated cluster vs kvspan serve, and recovery from a dead decode worker.");
  flags.Add("kvspan", &kvspan, "the kvspan binary");
  flags.Add("model", &model, "model directory");
  flags.Add("out", &out, "Markdown file to write the section into");
  flags.Add("section", &section, "section name in --out");
  flags.Add("parts", &parts, "ttft, recovery or both");
  flags.Add("prompt-lengths", &lengths_text, "comma-separated prompt lengths of the TTFT table");
  flags.Add("policies", &policies_text, "';'-separated policies of the TTFT table");
  flags.Add("threads", &threads, "model threads of each worker and of serve");
  flags.Add("reps", &reps, "TTFT: unique prompts per cell (each sent cold then warm); the median is reported");
  flags.Add("recovery-requests", &recovery_requests, "recovery: requests in the load");
  flags.Add("recovery-concurrency", &recovery_concurrency, "recovery: concurrent streams");
  flags.Add("recovery-tokens", &recovery_tokens, "recovery: tokens each request generates");
  if (std::optional<int> code = flags.ParseOrExitCode(argc, argv)) return *code;
  std::string dir = "/tmp/kvspan_disagg_bench_XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) {
    std::perror("disagg_bench: mkdtemp");
    return 1;
  }
  const std::string load_before = LoadAverage();
  std::string body;

  if (parts.find("ttft") != std::string::npos) {
    auto serve = std::make_unique<ServeProcess>(
        kvspan, std::vector<std::string>{"--model", model, "--data", dir + "/serve", "--threads", threads});
    Cluster cluster = StartCluster(kvspan, model, dir + "/ttft", 1, threads);
    if (serve->address().empty() || cluster.frontend->address().empty()) {
      std::fprintf(stderr, "disagg_bench: a process did not start\n");
      return 1;
    }
    auto serve_stub = serve->NewStub();
    body += absl::StrFormat(
        "Time to first token at the client, ms (median of %d unique prompts per cell; warm = the same prompt "
        "again, its spans in the store). The cluster: 1 prefill and 1 decode worker, %s model threads each; serve: "
        "%s threads. Wire = bytes the decode worker received per cold request (spans + tail + logits).\n\n"
        "Pull ms = the decode worker's call to the prefill worker (start to the tail's last byte); exposed ms = "
        "pull minus the prefill worker's own time (store load + prefill): the transfer that the span pipelining did "
        "not hide behind the prefill (cold requests, mean).\n\n"
        "| policy | prompt | serve cold | cluster cold | cold ratio | serve warm | cluster warm | warm ratio |"
        " wire MiB | pull ms | exposed ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        reps, threads, threads);
    uint32_t seed = 1000;
    for (const std::string& policy : std::vector<std::string>(absl::StrSplit(policies_text, ';'))) {
      for (const std::string& length_text : std::vector<std::string>(absl::StrSplit(lengths_text, ','))) {
        const int length = std::stoi(length_text);
        std::vector<double> sc, cc, sw, cw;
        double wire = 0, pull_ms = 0, remote_ms = 0;
        for (int r = 0; r < reps; ++r) {
          const v1::GenerateRequest request = tests::GreedyRequest(tests::PromptIds(seed++, length), 2, policy, "");
          Timed s1 = Call(*serve_stub, request);
          const v1::WorkerInfo before = DecodeInfo(*cluster.decode[0]);
          Timed c1 = Call(*cluster.stub, request);
          const v1::WorkerInfo after = DecodeInfo(*cluster.decode[0]);
          wire += static_cast<double>(after.transport().span_bytes_received() - before.transport().span_bytes_received() +
                                      after.transport().tail_bytes_received() - before.transport().tail_bytes_received());
          pull_ms += (after.transport().pull_us_total() - before.transport().pull_us_total()) / 1e3;
          remote_ms += (after.transport().remote_prefill_us_total() - before.transport().remote_prefill_us_total()) / 1e3;
          std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the asynchronous Puts land
          Timed s2 = Call(*serve_stub, request);
          Timed c2 = Call(*cluster.stub, request);
          for (const Timed* t : {&s1, &c1, &s2, &c2}) {
            if (!t->status.ok()) {
              std::fprintf(stderr, "disagg_bench: %s\n", t->status.error_message().c_str());
              return 1;
            }
          }
          sc.push_back(s1.ttft_ms);
          cc.push_back(c1.ttft_ms);
          sw.push_back(s2.ttft_ms);
          cw.push_back(c2.ttft_ms);
        }
        auto median = [](std::vector<double> v) {
          std::sort(v.begin(), v.end());
          return v[v.size() / 2];
        };
        body += absl::StrFormat("| %s | %d | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx | %.2f | %.1f | %.1f |\n",
                                policy, length, median(sc), median(cc), median(cc) / median(sc), median(sw),
                                median(cw), median(cw) / median(sw), wire / reps / (1 << 20), pull_ms / reps,
                                (pull_ms - remote_ms) / reps);
        std::fprintf(stderr, "ttft %s %d done\n", policy.c_str(), length);
      }
    }
  }

  if (parts.find("recovery") != std::string::npos) {
    Cluster cluster = StartCluster(kvspan, model, dir + "/recovery", 2, "1");
    if (cluster.frontend->address().empty()) {
      std::fprintf(stderr, "disagg_bench: the cluster did not start\n");
      return 1;
    }
    std::atomic<int> next{0}, started{0}, failed{0}, ok{0};
    std::mutex mu;
    std::vector<Clock::time_point> failure_times;
    std::vector<std::thread> threads_;
    for (int t = 0; t < recovery_concurrency; ++t) {
      threads_.emplace_back([&] {
        while (true) {
          const int i = next.fetch_add(1);
          if (i >= recovery_requests) return;
          started.fetch_add(1);
          Timed r = Call(*cluster.stub,
                         tests::GreedyRequest(tests::PromptIds(5000 + i, 100), recovery_tokens, "int4(g=32)", ""));
          if (r.status.ok()) {
            ok.fetch_add(1);
          } else {
            failed.fetch_add(1);
            std::lock_guard<std::mutex> lock(mu);
            failure_times.push_back(r.end);
          }
        }
      });
    }
    // Kill the first decode worker once a third of the load has started and it holds streams.
    int held = 0;
    while (true) {
      held = DecodeInfo(*cluster.decode[0]).running_sequences();
      if (started.load() >= recovery_requests / 3 && held >= recovery_concurrency / 2 - 1) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const Clock::time_point killed = Clock::now();
    cluster.decode[0]->Stop(SIGKILL);
    for (auto& t : threads_) t.join();
    double last_ms = 0;
    for (const auto& t : failure_times) last_ms = std::max(last_ms, Ms(killed, t));
    body += absl::StrFormat(
        "\nRecovery: %d requests (%d tokens each, %d concurrent streams) through a frontend over 2 decode workers "
        "and 1 prefill worker (1 model thread each); the first decode worker was killed with SIGKILL while it "
        "held %d streams, after %d requests had started.\n\n"
        "| requests | failed | failed share | streams on the killed worker | last failure after the kill, ms |\n"
        "|---:|---:|---:|---:|---:|\n| %d | %d | %.1f%% | %d | %.0f |\n",
        recovery_requests, recovery_tokens, recovery_concurrency, held, recovery_requests / 3, recovery_requests,
        failed.load(), 100.0 * failed.load() / recovery_requests, held, last_ms);
  }
  std::string model_name = model;
  while (!model_name.empty() && model_name.back() == '/') model_name.pop_back();
  model_name = model_name.substr(model_name.find_last_of('/') + 1);
  const std::string section_body = absl::StrFormat(
      "## Disaggregated cluster vs kvspan serve (issue 10): %s\n\nMeasured %s on %s, model %s, load average %s at "
      "the start, %s at the end. Command: `%s`\n\n%s",
      model_name,
      absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone()), CpuModel(), model, load_before, LoadAverage(),
      CommandLine(argc, argv), body);
  std::printf("%s", section_body.c_str());
  absl::Status written = WriteDocSection(out, section, section_body);
  if (!written.ok()) {
    std::fprintf(stderr, "disagg_bench: %s\n", written.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace kvspan::bench

int main(int argc, char** argv) { return kvspan::bench::Main(argc, argv); }
