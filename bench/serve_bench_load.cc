// serve_bench's load parts (bench/serve_bench.h): admission under one KV budget, and a
// multi-turn trace of concurrent sessions.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <utility>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/serve_bench.h"
#include "common/status_macros.h"

namespace kvspan::bench {
namespace {

using Clock = std::chrono::steady_clock;
using node::GenerateResult;
using node::ServingClient;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// What the watcher saw of one policy's streams in ServerInfo.
struct AdmissionPeak {
  int running = 0;
  int waiting = 0;
  int64_t kv_bytes_in_use = 0;
  // The median running count over the last settle_ms of the watch: what the budget holds
  // once the sequences have grown (the server preempts past it), beside the peak at
  // admission.
  double running_settled = 0;
};

// Polls ServerInfo every 10 ms until the peak running count has held for settle_ms,
// admission_seconds have passed, or every stream is done; then sets *stop.
absl::Status Watch(const ServingClient& client, const ServeBenchOptions& options,
                   const std::atomic<int>& done, int num_streams, std::atomic<bool>* stop,
                   AdmissionPeak* peak) {
  const Clock::time_point start = Clock::now();
  Clock::time_point last_rise = start;
  std::vector<std::pair<double, int>> samples;  // (ms since start, running)
  absl::Status status;
  while (done.load() < num_streams && MsSince(start) < options.admission_seconds * 1e3 &&
         (peak->running == 0 || MsSince(last_rise) < options.settle_ms)) {
    absl::StatusOr<kvspan::v1::ServerInfoResponse> info = client.ServerInfo();
    if (!info.ok()) {
      status = info.status();
      break;
    }
    if (info->running_sequences() > peak->running) last_rise = Clock::now();
    peak->running = std::max(peak->running, info->running_sequences());
    peak->waiting = std::max(peak->waiting, info->waiting_requests());
    peak->kv_bytes_in_use = std::max(peak->kv_bytes_in_use, info->kv_bytes_in_use());
    samples.emplace_back(MsSince(start), info->running_sequences());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop->store(true);
  std::vector<double> settled;
  for (const auto& [ms, running] : samples) {
    if (ms >= samples.back().first - options.settle_ms) settled.push_back(running);
  }
  peak->running_settled = Quantile(settled, 0.5);
  return status;
}

// Waits (up to 60 s) until the server runs and queues nothing, so that one policy's
// streams do not count towards the next one's.
absl::Status WaitIdle(const ServingClient& client) {
  const Clock::time_point start = Clock::now();
  while (MsSince(start) < 60e3) {
    ASSIGN_OR_RETURN(const kvspan::v1::ServerInfoResponse info, client.ServerInfo());
    if (info.running_sequences() == 0 && info.waiting_requests() == 0) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError("the server still runs sequences 60 s after the streams ended");
}

}  // namespace

absl::StatusOr<std::string> RunAdmissionPart(const ServingClient& client,
                                             const ServeBenchOptions& options) {
  ASSIGN_OR_RETURN(const kvspan::v1::ServerInfoResponse info, client.ServerInfo());
  const int num_streams = options.admission_streams;
  const int room = info.context_tokens() - options.admission_prompt_tokens;
  const int max_tokens =
      options.admission_max_tokens > 0 ? std::min(options.admission_max_tokens, room) : room;
  if (max_tokens <= 0) {
    return absl::InvalidArgumentError("--admission-prompt-tokens leaves no room in the context");
  }
  std::string out = absl::StrFormat(
      "### Sequences admitted under one KV budget\n\n"
      "A server with a KV budget of %d bytes (ServerInfo.kv_budget_bytes; max_queue %d). Per "
      "policy, %d streams start together, each a prompt of %d random token ids with "
      "ignore_eos and max_tokens %d, so that they hold and grow their memory. ServerInfo is "
      "polled every 10 ms until the peak running count has held for %d ms (at most %.0f s), "
      "then every stream is cancelled. Peak running: the most sequences admitted at once; "
      "as they grow past the budget the server preempts the youngest, so the running count "
      "over the last part of the watch is what the budget holds. Rejected = "
      "RESOURCE_EXHAUSTED (queue full). Quality: the policy's row of `%s` (ppl: perplexity "
      "change vs the dense cache).\n\n"
      "| policy | peak running | running, last %d ms (median) | peak waiting | rejected "
      "| peak KV in use | of budget | quality |\n|---|---:|---:|---:|---:|---:|---:|---|\n",
      info.kv_budget_bytes(), info.max_queue(), num_streams, options.admission_prompt_tokens,
      max_tokens, options.settle_ms, options.admission_seconds, options.quality_csv,
      options.settle_ms);
  for (size_t p = 0; p < options.admission_policies.size(); ++p) {
    const std::string& policy = options.admission_policies[p];
    std::atomic<bool> stop{false};
    std::atomic<int> done{0}, rejected{0};
    std::mutex mu;
    std::string canonical = policy;  // guarded by mu: the server's name for it
    AdmissionPeak peak;
    absl::Status watch_status;
    std::thread watcher(
        [&] { watch_status = Watch(client, options, done, num_streams, &stop, &peak); });
    node::GenerateCallbacks callbacks;
    callbacks.on_started = [&](const kvspan::v1::Started& s) {
      std::lock_guard<std::mutex> lock(mu);
      canonical = s.policy();
      return !stop.load();
    };
    callbacks.on_tokens = [&](const kvspan::v1::Tokens&) { return !stop.load(); };
    absl::Status streams_status = RunOnThreads(num_streams, [&](int i) -> absl::Status {
      kvspan::v1::GenerateRequest request = IdsRequest(
          RandomIds(options.seed, (uint64_t{2} << 60) | (p << 20) | i,
                    options.admission_prompt_tokens, info.vocab_size()),
          max_tokens, policy, absl::StrCat(options.tenant_prefix, "-admission-", p));
      request.set_ignore_eos(true);
      absl::StatusOr<GenerateResult> result = client.Generate(request, 0, callbacks);
      done.fetch_add(1);
      if (result.ok() || (absl::IsCancelled(result.status()) && stop.load())) return absl::OkStatus();
      if (absl::IsResourceExhausted(result.status())) {
        rejected.fetch_add(1);
        return absl::OkStatus();
      }
      return result.status();
    });
    stop.store(true);
    watcher.join();
    RETURN_IF_ERROR(streams_status);
    RETURN_IF_ERROR(watch_status);
    RETURN_IF_ERROR(WaitIdle(client));
    const double budget = std::max<double>(1, info.kv_budget_bytes());
    absl::StrAppendFormat(&out, "| %s | %d | %.0f | %d | %d | %d | %.0f%% | %s |\n", canonical,
                          peak.running, peak.running_settled, peak.waiting, rejected.load(),
                          peak.kv_bytes_in_use, 100.0 * peak.kv_bytes_in_use / budget,
                          QualitySummary(options.quality_csv, info.model_name(), canonical));
  }
  return out;
}

absl::StatusOr<std::string> RunTracePart(const ServingClient& client, const ServeBenchOptions& options) {
  ASSIGN_OR_RETURN(const kvspan::v1::ServerInfoResponse info, client.ServerInfo());
  struct Turn {
    int prompt = 0, store = 0, resident = 0;
    double ttft_ms = 0;
  };
  std::vector<std::vector<Turn>> turns(options.sessions, std::vector<Turn>(options.turns));
  const std::string tenant = absl::StrCat(options.tenant_prefix, "-trace");
  RETURN_IF_ERROR(RunOnThreads(options.sessions, [&](int s) -> absl::Status {
    kvspan::v1::OpenSessionRequest open;
    open.set_tenant(tenant);
    ASSIGN_OR_RETURN(const kvspan::v1::OpenSessionResponse session, client.OpenSession(open));
    std::mt19937_64 rng(options.seed * 1000003 + s);
    std::uniform_int_distribution<int> length(options.turn_min_tokens, options.turn_max_tokens);
    for (int t = 0; t < options.turns; ++t) {
      kvspan::v1::GenerateRequest request =
          IdsRequest(RandomIds(options.seed, (uint64_t{3} << 60) | (uint64_t(s) << 20) | t,
                               length(rng), info.vocab_size()),
                     options.turn_completion_tokens, "", tenant);
      request.set_session_id(session.session_id());
      request.set_ignore_eos(true);
      ASSIGN_OR_RETURN(const GenerateResult r, client.Generate(request, 0));
      turns[s][t] = {r.started.prompt_tokens(), r.started.store_prompt_tokens(),
                     r.started.resident_prompt_tokens(), r.first_token_ms};
    }
    return client.CloseSession(session.session_id());
  }));
  std::string out = absl::StrFormat(
      "### Multi-turn trace\n\n"
      "%d sessions run concurrently, %d turns each; a turn sends %d-%d new random token ids "
      "(greedy, ignore_eos, max_tokens %d) in the session, whose history the server reuses. "
      "Hit rate = cached prompt tokens (store + resident, from Started) / prompt tokens, summed "
      "over the sessions; TTFT is client-side.\n\n"
      "| turn | prompt tokens (mean) | hit rate | resident | store | TTFT p50 ms | TTFT p99 ms |\n"
      "|---:|---:|---:|---:|---:|---:|---:|\n",
      options.sessions, options.turns, options.turn_min_tokens, options.turn_max_tokens,
      options.turn_completion_tokens);
  for (int t = 0; t < options.turns; ++t) {
    int64_t prompt = 0, store = 0, resident = 0;
    std::vector<double> ttft;
    for (const std::vector<Turn>& session : turns) {
      prompt += session[t].prompt;
      store += session[t].store;
      resident += session[t].resident;
      ttft.push_back(session[t].ttft_ms);
    }
    const double total = std::max<int64_t>(1, prompt);
    absl::StrAppendFormat(&out, "| %d | %.1f | %.1f%% | %.1f%% | %.1f%% | %.1f | %.1f |\n", t + 1,
                          static_cast<double>(prompt) / options.sessions,
                          100.0 * (store + resident) / total, 100.0 * resident / total,
                          100.0 * store / total, Quantile(ttft, 0.5), Quantile(ttft, 0.99));
  }
  return out;
}

}  // namespace kvspan::bench
