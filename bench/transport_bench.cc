// transport_bench: what the gRPC span transport ships and how fast, over a real loopback
// socket in one process (the decode side's PullPrefill against a Prefill service).
//
//   wire     for each policy, a real prefill of a prompt through the real PrefillService
//            (the model, an embedded store in a temporary directory): span bytes, tail
//            bytes and their sum per prompt token, against bf16 KV (what vLLM-style
//            systems ship with bf16 pages) and fp32 KV (this runtime's dense cache);
//   loopback a sender streaming pre-serialized spans of the model's geometry (so no model
//            compute is timed) to the real receiver: span payload GB/s with every span
//            parsed and checked, and the same stream read without the checks.
// Writes the tables into docs/performance.md, section transport_bench (or --section).
//   build/bench/transport_bench --model models/kvspan-brown
//   build/bench/transport_bench --model /tmp/llama-3.2-1b --section transport_bench_llama_1b
#include <grpcpp/grpcpp.h>

#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/doc_section.h"
#include "cachestore/embedded_client.h"
#include "cachestore/store.h"
#include "common/flags.h"
#include "decode/decode_worker.h"
#include "kvcache/cache_policy.h"
#include "kvcache/span_compressor.h"
#include "kvcache/span_format.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "prefill/prefill_worker.h"
#include "transport/prefill_client.h"
#include "transport/prefill_service.h"
#include "transport/span_transport.h"
#include "transport/tail_blob.h"

namespace kvspan::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

std::unique_ptr<grpc::Server> Serve(grpc::Service* service, std::string* address) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service);
  transport::ConfigureWorkerServer(builder);
  auto server = builder.BuildAndStart();
  *address = absl::StrCat("127.0.0.1:", port);
  return server;
}

// Streams a fixed header, `spans` (serialized) and a tail blob, as a prefill worker would.
class CannedPrefill final : public v1::Prefill::Service {
 public:
  v1::PrefillHeader header;
  std::vector<std::string> spans;
  std::string tail;
  grpc::Status Prefill(grpc::ServerContext*, const v1::PrefillRequest*,
                       grpc::ServerWriter<v1::PrefillChunk>* writer) override {
    v1::PrefillChunk c;
    *c.mutable_header() = header;
    writer->Write(c);
    for (size_t i = 0; i < spans.size(); ++i) {
      v1::PrefillChunk s;
      s.mutable_span()->set_index(static_cast<int>(i));
      s.mutable_span()->set_span(spans[i]);
      writer->Write(s);
    }
    v1::PrefillChunk t;
    t.mutable_tail()->set_data(tail);
    t.mutable_tail()->set_last(true);
    writer->Write(t);
    return grpc::Status::OK;
  }
};

// Brown-like text ids of `n` tokens: the model's own tokenizer over repeated prose.
std::vector<int32_t> PromptIds(const model::Tokenizer& tokenizer, int n) {
  const std::string text =
      "The jury further said in term-end presentments that the City Executive Committee, which had over-all "
      "charge of the election, deserves the praise and thanks of the City of Atlanta for the manner in which "
      "the election was conducted. ";
  std::vector<int32_t> ids = tokenizer.EncodeForGeneration(text);
  while (static_cast<int>(ids.size()) < n) {
    const std::vector<int32_t> more = tokenizer.Encode(text);
    ids.insert(ids.end(), more.begin(), more.end());
  }
  ids.resize(n);
  return ids;
}

int Main(int argc, char** argv) {
  std::string model_dir = "models/kvspan-brown";
  std::string out = "docs/performance.md";
  std::string section = "transport_bench";
  std::string policies_text = "dense;bf16;int8(g=32);int4(g=32);kvmerger(sim=0.9,sigma=1.0)/int4(g=32)";
  int prompt_tokens = 1000;
  int loopback_spans = 64;
  int reps = 3;
  int threads = 2;
  FlagSet flags("transport_bench", "Bytes on the wire per prompt token and loopback throughput of the span transport.");
  flags.Add("model", &model_dir, "model directory");
  flags.Add("out", &out, "Markdown file to write the section into");
  flags.Add("section", &section, "section name in --out");
  flags.Add("policies", &policies_text, "';'-separated policies of the wire table");
  flags.Add("prompt-tokens", &prompt_tokens, "prompt length of the wire table");
  flags.Add("loopback-spans", &loopback_spans, "spans per loopback stream (bf16 spans of the model)");
  flags.Add("reps", &reps, "loopback repetitions (the best is reported)");
  flags.Add("threads", &threads, "model threads");
  if (std::optional<int> code = flags.ParseOrExitCode(argc, argv)) return *code;

  auto model = model::Model::Load(model_dir, {.num_threads = threads});
  auto tokenizer = model::Tokenizer::LoadFromDir(model_dir);
  if (!model.ok() || !tokenizer.ok()) {
    std::fprintf(stderr, "transport_bench: %s %s\n", model.status().ToString().c_str(),
                 tokenizer.status().ToString().c_str());
    return 1;
  }
  const model::ModelConfig& config = (*model)->config();
  const int S = 64;
  const std::string load_before = LoadAverage();

  // --- wire ---
  std::string dir = "/tmp/kvspan_transport_bench_XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) {
    std::perror("transport_bench: mkdtemp");
    return 1;
  }
  cachestore::StoreOptions so;
  so.path = dir + "/store";
  auto store = cachestore::CacheStore::Open(so);
  if (!store.ok()) {
    std::fprintf(stderr, "transport_bench: %s\n", store.status().ToString().c_str());
    return 1;
  }
  prefill::StoreRouterOptions ro;
  ro.client = std::make_shared<cachestore::EmbeddedCacheClient>(std::shared_ptr<cachestore::CacheStore>(std::move(*store)));
  ro.model_fingerprint = config.fingerprint;
  ro.geometry = {config.num_layers, config.num_kv_heads, config.head_dim, S};
  auto router = std::make_shared<prefill::StoreRouter>(ro);
  decode::DecodeWorker worker(model->get(), tokenizer->get(), router, {});
  transport::InProcessTransport in_process(&worker);
  prefill::PrefillWorker prefill_worker(router, &in_process, 1);
  transport::PrefillService service(config, &prefill_worker, &worker, router.get(), {.span_tokens = S});
  std::string address;
  auto server = Serve(&service, &address);
  auto stub = v1::Prefill::NewStub(transport::WorkerChannel(address, nullptr));

  const double bf16_per_token = 2.0 * 2 * config.num_layers * config.num_kv_heads * config.head_dim;
  std::string wire = absl::StrFormat(
      "Bytes on the wire per prompt token, a %d-token prompt (%d spans of S=%d and a %d-token dense tail, plus "
      "the last token's logits), from a real prefill through the Prefill service; bf16 KV = %.0f B/token "
      "(K and V, %d layers x %d KV heads x %d), fp32 KV = %.0f B/token.\n\n"
      "| policy | span bytes/token | tail + logits bytes/token | total bytes/token | vs bf16 KV | vs fp32 KV |"
      " prefill + transfer ms |\n|---|---:|---:|---:|---:|---:|---:|\n",
      prompt_tokens, prompt_tokens / S, S, prompt_tokens % S, bf16_per_token, config.num_layers, config.num_kv_heads,
      config.head_dim, 2 * bf16_per_token);
  const std::vector<int32_t> ids = PromptIds(**tokenizer, prompt_tokens);
  kvcache::PolicyCache policies(config, S);
  int tenant = 0;
  for (const std::string& text : std::vector<std::string>(absl::StrSplit(policies_text, ';'))) {
    auto policy = policies.Get(text);
    if (!policy.ok()) {
      std::fprintf(stderr, "transport_bench: %s\n", policy.status().ToString().c_str());
      return 2;
    }
    v1::PrefillRequest r;
    r.set_request_id("bench");
    r.set_tenant(absl::StrCat("bench", tenant++));  // a cold store for each policy
    r.set_policy((*policy)->canonical());
    r.mutable_tokens()->Assign(ids.begin(), ids.end());
    r.set_model_fingerprint(config.fingerprint);
    r.set_span_tokens(S);
    grpc::ClientContext context;
    auto pulled = transport::PullPrefill(*stub, &context, r, config, **policy);
    if (!pulled.ok()) {
      std::fprintf(stderr, "transport_bench: %s: %s\n", text.c_str(), pulled.status().ToString().c_str());
      return 1;
    }
    const double span = static_cast<double>(pulled->span_bytes) / prompt_tokens;
    const double tail = static_cast<double>(pulled->tail_bytes) / prompt_tokens;
    wire += absl::StrFormat("| %s | %.1f | %.1f | %.1f | %.3fx | %.3fx | %.0f |\n", (*policy)->canonical(), span, tail,
                            span + tail, (span + tail) / bf16_per_token, (span + tail) / (2 * bf16_per_token),
                            pulled->transfer_ms);
    std::fprintf(stderr, "wire %s: %.1f B/token\n", text.c_str(), span + tail);
  }
  server->Shutdown();

  // --- loopback ---
  auto bf16 = policies.Get("bf16");
  kvcache::PolicySpanCompressor compressor({.policy = (*bf16)->policy(), .model_fingerprint = config.fingerprint});
  const int64_t row = int64_t{config.num_kv_heads} * config.head_dim;
  std::vector<float> k(int64_t{config.num_layers} * S * row), v(k.size());
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : k) x = normal(rng);
  for (float& x : v) x = normal(rng);
  CannedPrefill canned;
  int64_t payload = 0;
  for (int i = 0; i < loopback_spans; ++i) {
    kvcache::DenseSpanView view;
    view.geometry = {config.num_layers, config.num_kv_heads, config.head_dim, S};
    view.first_position = i * S;
    view.span_index = i;
    view.kv = {.keys = k.data(), .values = v.data(), .layer_stride = S * row, .head_stride = config.head_dim,
               .token_stride = row};
    auto span = compressor.Compress(view);
    if (!span.ok()) {
      std::fprintf(stderr, "transport_bench: %s\n", span.status().ToString().c_str());
      return 1;
    }
    canned.spans.push_back(kvcache::SerializeSpan(*span));
    payload += static_cast<int64_t>(canned.spans.back().size());
  }
  const int num_tokens = loopback_spans * S;
  v1::PrefillHeader& h = canned.header;
  h.set_model_fingerprint(config.fingerprint);
  h.set_policy((*bf16)->canonical());
  h.set_span_tokens(S);
  h.set_num_layers(config.num_layers);
  h.set_num_kv_heads(config.num_kv_heads);
  h.set_head_dim(config.head_dim);
  h.set_num_tokens(num_tokens);
  h.set_num_spans(loopback_spans);
  model::DenseRows empty;
  empty.first_position = num_tokens;
  empty.num_layers = config.num_layers;
  empty.num_kv_heads = config.num_kv_heads;
  empty.num_heads = config.num_heads;
  empty.head_dim = config.head_dim;
  canned.tail = transport::SerializeTail(empty, std::vector<float>(config.vocab_size, 0.0f));
  std::string canned_address;
  auto canned_server = Serve(&canned, &canned_address);
  auto canned_stub = v1::Prefill::NewStub(transport::WorkerChannel(canned_address, nullptr));
  v1::PrefillRequest lr;
  lr.set_policy((*bf16)->canonical());
  lr.set_model_fingerprint(config.fingerprint);
  lr.set_span_tokens(S);
  lr.mutable_tokens()->Resize(num_tokens, 5);
  double best_checked = 1e30, best_raw = 1e30;
  for (int rep = 0; rep < reps; ++rep) {
    {
      grpc::ClientContext context;
      const auto start = Clock::now();
      auto pulled = transport::PullPrefill(*canned_stub, &context, lr, config, **bf16);
      const auto end = Clock::now();
      if (!pulled.ok()) {
        std::fprintf(stderr, "transport_bench: loopback: %s\n", pulled.status().ToString().c_str());
        return 1;
      }
      best_checked = std::min(best_checked, Seconds(start, end));
    }
    {
      grpc::ClientContext context;
      const auto start = Clock::now();
      auto reader = canned_stub->Prefill(&context, lr);
      v1::PrefillChunk chunk;
      while (reader->Read(&chunk)) {
      }
      (void)reader->Finish();
      best_raw = std::min(best_raw, Seconds(start, Clock::now()));
    }
  }
  canned_server->Shutdown();
  // The receiver's checks alone, no gRPC: ParseSpan (checksum, format) and CheckSpanIdentity.
  double best_parse = 1e30;
  const kvcache::SpanGeometry geometry{config.num_layers, config.num_kv_heads, config.head_dim, S};
  for (int rep = 0; rep < reps; ++rep) {
    const auto start = Clock::now();
    for (int i = 0; i < loopback_spans; ++i) {
      auto span = kvcache::ParseSpan(canned.spans[i]);
      if (!span.ok() ||
          !kvcache::CheckSpanIdentity(*span, config.fingerprint, (*bf16)->canonical(), geometry, i).ok()) {
        std::fprintf(stderr, "transport_bench: a canned span does not parse\n");
        return 1;
      }
    }
    best_parse = std::min(best_parse, Seconds(start, Clock::now()));
  }
  const std::string loopback = absl::StrFormat(
      "\nLoopback: %d bf16 spans of this model's geometry (%.2f MiB each, %.1f MiB in all) in one stream from a "
      "sender of pre-serialized spans to the receiver, both in this process on 127.0.0.1 (best of %d):\n\n"
      "| receiver | seconds | span payload GB/s |\n|---|---:|---:|\n"
      "| PullPrefill (every span parsed, checksummed and checked) | %.3f | %.2f |\n"
      "| the same stream, messages read only | %.3f | %.2f |\n"
      "| no gRPC: ParseSpan + CheckSpanIdentity of the same spans | %.3f | %.2f |\n",
      loopback_spans, payload / static_cast<double>(loopback_spans) / (1 << 20), payload / double(1 << 20), reps,
      best_checked, payload / best_checked / 1e9, best_raw, payload / best_raw / 1e9, best_parse,
      payload / best_parse / 1e9);
  std::string model_name = model_dir;
  while (!model_name.empty() && model_name.back() == '/') model_name.pop_back();
  model_name = model_name.substr(model_name.find_last_of('/') + 1);
  const std::string body = absl::StrFormat(
      "## Span transport (issue 10): %s\n\nMeasured %s on %s, load average %s at the start, %s at the end. "
      "Command: `%s`\n\n%s%s",
      model_name,
      absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone()),
      CpuModel(), load_before, LoadAverage(), CommandLine(argc, argv), wire, loopback);
  std::printf("%s", body.c_str());
  absl::Status written = WriteDocSection(out, section, body);
  if (!written.ok()) {
    std::fprintf(stderr, "transport_bench: %s\n", written.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace kvspan::bench

int main(int argc, char** argv) { return kvspan::bench::Main(argc, argv); }
