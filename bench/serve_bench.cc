// serve_bench: measures a running `kvspan serve` from outside, as a gRPC client
// (bench/serve_bench.h lists the parts). bench/run_serve_bench.sh starts the servers,
// runs this program and stops them; the tables go to docs/performance.md, section
// serve_bench (--out), with the command, the date and the machine's load.
// This file: the command line, the document, and the TTFT and decode parts.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/doc_section.h"
#include "bench/serve_bench.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace kvspan::bench {

using node::GenerateResult;
using node::ServingClient;

absl::StatusOr<std::string> RunTtftPart(const ServingClient& client, const ServeBenchOptions& options) {
  ASSIGN_OR_RETURN(const kvspan::v1::ServerInfoResponse info, client.ServerInfo());
  constexpr int kMaxTokens = 1;
  std::string notes;
  std::vector<int> lengths;  // what fits the context, each once
  for (int requested : options.prompt_lengths) {
    const int n = std::min(requested, info.context_tokens() - kMaxTokens);
    if (n != requested) {
      absl::StrAppend(&notes, "Prompt length ", requested, " does not fit the model's context of ",
                      info.context_tokens(), " tokens with ", kMaxTokens, " generated: ",
                      n > 0 && std::find(lengths.begin(), lengths.end(), n) == lengths.end()
                          ? absl::StrCat("measured at ", n, " tokens.\n")
                          : std::string("skipped.\n"));
    }
    if (n > 0 && std::find(lengths.begin(), lengths.end(), n) == lengths.end()) lengths.push_back(n);
  }
  std::string out = absl::StrCat(
      "### Time to first token: prefix hit vs recompute\n\n",
      "Each repetition sends a fresh prompt of random token ids under a fresh tenant (a miss: "
      "nothing cached), then, ", options.hit_delay_ms, " ms after it finished (spans reach the "
      "store asynchronously), the same prompt again (a hit: its spans are in the cache store); "
      "greedy, max_tokens ", kMaxTokens, ". Medians of ", options.reps,
      " repetitions. TTFT is measured by the client (call start to the first Tokens message); "
      "the server's own Timings.ttft_ms is beside it. `store_load_ms` is the hit's time loading "
      "spans from the store, `tail fwd ms` the hit's forward step over its uncached tail "
      "(Timings.prefill_ms minus store_load_ms); the last column is the hit's TTFT over their "
      "sum (target: within 2x).\n\n", notes, notes.empty() ? "" : "\n",
      "| policy | prompt tokens | TTFT miss ms | TTFT hit ms | miss / hit | server TTFT miss / hit ms "
      "| hit store_load_ms | hit tail fwd ms | hit TTFT / (load + tail) | hit tokens from store | from resident "
      "| hit computed |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (size_t p = 0; p < options.policies.size(); ++p) {
    for (int n : lengths) {
      std::vector<double> miss_ms, hit_ms, miss_server_ms, hit_server_ms, load_ms, tail_ms, bound_ratio, store,
          resident, computed;
      std::string canonical = options.policies[p];
      for (int rep = 0; rep < options.reps; ++rep) {
        const std::string tenant = absl::StrCat(options.tenant_prefix, "-ttft-", p, "-", n, "-", rep);
        const kvspan::v1::GenerateRequest request =
            IdsRequest(RandomIds(options.seed, (p << 40) | (uint64_t(n) << 20) | rep, n,
                                 info.vocab_size()),
                       kMaxTokens, options.policies[p], tenant);
        ASSIGN_OR_RETURN(const GenerateResult miss, client.Generate(request, 0));
        std::this_thread::sleep_for(std::chrono::milliseconds(options.hit_delay_ms));
        ASSIGN_OR_RETURN(const GenerateResult hit, client.Generate(request, 0));
        canonical = hit.started.policy();
        miss_ms.push_back(miss.first_token_ms);
        hit_ms.push_back(hit.first_token_ms);
        miss_server_ms.push_back(miss.finished.timings().ttft_ms());
        hit_server_ms.push_back(hit.finished.timings().ttft_ms());
        load_ms.push_back(hit.finished.timings().store_load_ms());
        tail_ms.push_back(hit.finished.timings().prefill_ms() - hit.finished.timings().store_load_ms());
        bound_ratio.push_back(hit.first_token_ms / std::max(1e-3, hit.finished.timings().prefill_ms()));
        store.push_back(hit.started.store_prompt_tokens());
        resident.push_back(hit.started.resident_prompt_tokens());
        computed.push_back(hit.started.computed_prompt_tokens());
      }
      const double miss = Quantile(miss_ms, 0.5), hit = Quantile(hit_ms, 0.5);
      absl::StrAppendFormat(&out,
                            "| %s | %d | %.1f | %.1f | %.2f | %.1f / %.1f | %.1f | %.1f | %.2f | %.0f | %.0f | %.0f |\n",
                            canonical, n, miss, hit, hit > 0 ? miss / hit : 0,
                            Quantile(miss_server_ms, 0.5), Quantile(hit_server_ms, 0.5),
                            Quantile(load_ms, 0.5), Quantile(tail_ms, 0.5), Quantile(bound_ratio, 0.5),
                            Quantile(store, 0.5), Quantile(resident, 0.5),
                            Quantile(computed, 0.5));
    }
  }
  return out;
}

namespace {

// One decode run: `streams` concurrent streams, started together.
struct DecodeRun {
  int64_t tokens = 0;
  double wall_s = 0;
  double per_stream_mean = 0, per_stream_min = 0;  // tok/s
  double ttft_p50_ms = 0, ttft_max_ms = 0;
  double aggregate() const { return tokens / wall_s; }
};

absl::StatusOr<DecodeRun> RunDecodeOnce(const ServingClient& client, const ServeBenchOptions& options,
                                        int vocab_size, int streams, int rep) {
  std::vector<GenerateResult> results(streams);
  const auto start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(RunOnThreads(streams, [&](int i) -> absl::Status {
    kvspan::v1::GenerateRequest request = IdsRequest(
        RandomIds(options.seed,
                  (uint64_t{1} << 60) | (uint64_t(streams) << 30) | (uint64_t(rep) << 20) | i,
                  options.decode_prompt_tokens, vocab_size),
        options.decode_max_tokens, "", absl::StrCat(options.tenant_prefix, "-decode"));
    request.set_ignore_eos(true);
    ASSIGN_OR_RETURN(results[i], client.Generate(request, 0));
    return absl::OkStatus();
  }));
  DecodeRun run;
  run.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<double> per_stream, ttft;
  for (const GenerateResult& r : results) {
    const int n = r.finished.usage().completion_tokens();
    run.tokens += n;
    const double decode_ms = r.finished_ms - r.first_token_ms;
    if (n > 1 && decode_ms > 0) per_stream.push_back((n - 1) * 1e3 / decode_ms);
    ttft.push_back(r.first_token_ms);
  }
  for (double v : per_stream) run.per_stream_mean += v / per_stream.size();
  run.per_stream_min = Quantile(per_stream, 0);
  run.ttft_p50_ms = Quantile(ttft, 0.5);
  run.ttft_max_ms = Quantile(ttft, 1);
  return run;
}

}  // namespace

absl::StatusOr<std::string> RunDecodePart(const ServingClient& client, const ServeBenchOptions& options) {
  ASSIGN_OR_RETURN(const kvspan::v1::ServerInfoResponse info, client.ServerInfo());
  std::string out = absl::StrCat(
      "### Decode throughput with concurrent streams\n\n",
      "N streams start together, each a prompt of ", options.decode_prompt_tokens,
      " random token ids, greedy, ignore_eos, max_tokens ", options.decode_max_tokens,
      ", the server's default policy (", info.default_policy(),
      "). Aggregate = all generated tokens / wall time from the first call's start to the last "
      "Finished; per stream = (tokens - 1) / (last token - first token), client-side. Each row "
      "is the run with the median aggregate of ", options.reps, " runs.\n\n"
      "| streams | generated tokens | wall s | aggregate tok/s | per-stream tok/s mean | min "
      "| TTFT p50 ms | TTFT max ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int streams : options.concurrency_levels) {
    std::vector<DecodeRun> runs;
    for (int rep = 0; rep < std::max(1, options.reps); ++rep) {
      ASSIGN_OR_RETURN(DecodeRun run, RunDecodeOnce(client, options, info.vocab_size(), streams, rep));
      runs.push_back(run);
    }
    std::sort(runs.begin(), runs.end(),
              [](const DecodeRun& a, const DecodeRun& b) { return a.aggregate() < b.aggregate(); });
    const DecodeRun& r = runs[runs.size() / 2];
    absl::StrAppendFormat(&out, "| %d | %d | %.2f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", streams,
                          r.tokens, r.wall_s, r.aggregate(), r.per_stream_mean, r.per_stream_min,
                          r.ttft_p50_ms, r.ttft_max_ms);
  }
  return out;
}

namespace {

absl::StatusOr<std::vector<int>> ParseInts(const std::string& flag, const std::string& list) {
  std::vector<int> values;
  for (const std::string& item : SplitTopLevel(list)) {
    int v = 0;
    if (!absl::SimpleAtoi(item, &v) || v <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": '", item, "' is not a positive integer"));
    }
    values.push_back(v);
  }
  return values;
}

std::string UtcNow() {
  const std::time_t now = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  return buf;
}

absl::StatusOr<std::unique_ptr<ServingClient>> Connect(const std::string& target) {
  node::ServingClientOptions o;
  o.target = target;
  return ServingClient::Create(o);
}

int Main(int argc, char** argv) {
  ServeBenchOptions o;
  std::string target, budget_target, out = "docs/performance.md", launcher, servers;
  std::string section_name = "serve_bench";
  std::string parts = "ttft,decode,admission,trace";
  std::string policies = absl::StrJoin(o.policies, ","), lengths = "1024,4096";
  std::string levels = "1,4,16,64", admission_policies = absl::StrJoin(o.admission_policies, ",");
  int64_t seed = static_cast<int64_t>(o.seed);
  FlagSet flags("serve_bench", "Measures a running `kvspan serve` as a gRPC client.");
  flags.Add("target", &target, "host:port of the server (required)");
  flags.Add("budget-target", &budget_target,
            "host:port of the server whose KV budget the admission part fills; empty = --target");
  flags.Add("out", &out, "markdown file to write (empty: stdout only)");
  flags.Add("section", &section_name, "name of the section of --out to write (one per model)");
  flags.Add("launcher", &launcher, "the command that started the servers and this run, for the docs");
  flags.Add("servers", &servers, "how the servers were started, for the docs");
  flags.Add("parts", &parts, "parts to run: ttft,decode,admission,trace");
  flags.Add("tenant-prefix", &o.tenant_prefix, "prefix of every tenant this run uses");
  flags.Add("seed", &seed, "seed of the random prompt ids");
  flags.Add("policies", &policies, "TTFT: policies, comma-separated");
  flags.Add("prompt-lengths", &lengths, "TTFT: prompt lengths in tokens, comma-separated");
  flags.Add("reps", &o.reps, "TTFT: unique prompts per policy and length; decode: runs per level");
  flags.Add("hit-delay-ms", &o.hit_delay_ms, "TTFT: pause between a prompt's miss and its hit, ms");
  flags.Add("concurrency-levels", &levels, "decode: numbers of concurrent streams");
  flags.Add("decode-prompt-tokens", &o.decode_prompt_tokens, "decode: prompt tokens per stream");
  flags.Add("decode-max-tokens", &o.decode_max_tokens, "decode: tokens generated per stream");
  flags.Add("admission-policies", &admission_policies, "admission: policies, comma-separated");
  flags.Add("admission-streams", &o.admission_streams, "admission: streams launched per policy");
  flags.Add("admission-prompt-tokens", &o.admission_prompt_tokens, "admission: prompt tokens per stream");
  flags.Add("admission-max-tokens", &o.admission_max_tokens,
            "admission: tokens generated per stream; 0 = to the end of the context");
  flags.Add("admission-seconds", &o.admission_seconds, "admission: longest watch per policy, s");
  flags.Add("settle-ms", &o.settle_ms, "admission: stop once the running count held this long");
  flags.Add("quality-csv", &o.quality_csv, "admission: the quality table to read rows from");
  flags.Add("sessions", &o.sessions, "trace: concurrent sessions");
  flags.Add("turns", &o.turns, "trace: turns per session");
  flags.Add("turn-completion-tokens", &o.turn_completion_tokens, "trace: tokens generated per turn");
  absl::Status parsed = flags.Parse(argc, argv);
  absl::StatusOr<std::vector<int>> parsed_lengths = ParseInts("prompt-lengths", lengths);
  absl::StatusOr<std::vector<int>> parsed_levels = ParseInts("concurrency-levels", levels);
  if (parsed.ok() && !parsed_lengths.ok()) parsed = parsed_lengths.status();
  if (parsed.ok() && !parsed_levels.ok()) parsed = parsed_levels.status();
  if (parsed.ok() && target.empty()) parsed = absl::InvalidArgumentError("--target is required");
  if (flags.help_requested() || !parsed.ok()) {
    std::fprintf(parsed.ok() ? stdout : stderr, "%s\n%s", std::string(parsed.message()).c_str(),
                 flags.Usage().c_str());
    return parsed.ok() ? 0 : 2;
  }
  o.seed = static_cast<uint64_t>(seed);
  o.policies = SplitTopLevel(policies);
  o.admission_policies = SplitTopLevel(admission_policies);
  o.prompt_lengths = *parsed_lengths;
  o.concurrency_levels = *parsed_levels;
  if (budget_target.empty()) budget_target = target;

  const std::string command = CommandLine(argc, argv);
  std::printf("reproduce with: %s\n", command.c_str());
  absl::StatusOr<std::unique_ptr<ServingClient>> client = Connect(target);
  absl::StatusOr<std::unique_ptr<ServingClient>> budget_client = Connect(budget_target);
  CHECK(client.ok() && budget_client.ok()) << "targets were checked above";
  absl::StatusOr<kvspan::v1::ServerInfoResponse> info = (*client)->ServerInfo();
  if (!info.ok()) return node::PrintError("serve_bench", info.status());

  std::string body = absl::StrFormat(
      "## Serving (issue 9): %s\n\nGenerated by `bench/serve_bench.cc`, a gRPC client of `kvspan "
      "serve`, on %s. Reproduce (from the repo root, after building the `kvspan` and "
      "`serve_bench` targets): `%s`, which started the servers%s and ran:\n\n```\n%s\n```"
      "\n\nServer: model %s, context %d tokens, span %d tokens, default "
      "policy %s, KV budget %d bytes, store %s. Machine: %s, %u cores, shared by the server "
      "and this client (and whatever else runs; each part gives the 1-minute load average at "
      "its start and end).\n\n",
      info->model_name(), UtcNow(), launcher.empty() ? "bench/run_serve_bench.sh" : launcher,
      servers.empty() ? "" : absl::StrCat(" (", servers, ")"), command,
      info->model_name(), info->context_tokens(), info->span_tokens(), info->default_policy(),
      info->kv_budget_bytes(), info->store(), CpuModel(), std::thread::hardware_concurrency());
  struct Part {
    const char* name;
    absl::StatusOr<std::string> (*run)(const ServingClient&, const ServeBenchOptions&);
    const ServingClient* client;
  };
  const Part kParts[] = {{"ttft", RunTtftPart, client->get()},
                         {"decode", RunDecodePart, client->get()},
                         {"admission", RunAdmissionPart, budget_client->get()},
                         {"trace", RunTracePart, client->get()}};
  const std::vector<std::string> wanted = SplitTopLevel(parts);
  for (const Part& part : kParts) {
    if (std::find(wanted.begin(), wanted.end(), part.name) == wanted.end()) continue;
    const std::string load_before = LoadAverage();
    std::printf("running %s ...\n", part.name);
    std::fflush(stdout);
    absl::StatusOr<std::string> section = part.run(*part.client, o);
    if (!section.ok()) return node::PrintError("serve_bench", section.status());
    absl::StrAppend(&body, *section, "\nLoad average: ", load_before, " at the start, ",
                    LoadAverage(), " at the end.\n\n");
  }
  std::printf("\n%s", body.c_str());
  if (!out.empty()) {
    if (absl::Status s = WriteDocSection(out, section_name, body); !s.ok()) {
      return node::PrintError("serve_bench", s);
    }
    std::printf("wrote section %s of %s\n", section_name.c_str(), out.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace kvspan::bench

int main(int argc, char** argv) {
  kvspan::InitLogging(argv[0]);
  return kvspan::bench::Main(argc, argv);
}
