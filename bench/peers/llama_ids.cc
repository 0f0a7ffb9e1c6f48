// llama.cpp's side of the output comparison (bench/peers/compare_outputs.sh): token ids in,
// next-token logits, negative log-likelihood and greedy continuations out, with no tokenizer in
// between, so that both engines see exactly the same ids. The kvspan side is
// bench/peers/kvspan_ids.cc, with the same flags and the same output lines.
//
// Built by bench/peers/build_llama_cpp.sh against the llama.cpp it builds (outside this
// repository's CMake: it links that tree's libllama.so):
//   $KVSPAN_PEERS_DIR/llama_ids --model M.gguf --ids FILE [--n-predict 32] [--threads 2]
//                               [--logits-out FILE]
//
// FILE and the output lines: bench/peers/ids_io.h. Each sequence is evaluated in a fresh
// context in one llama_decode with every position's logits (written to --logits-out), then
// --n-predict greedy tokens are decoded one llama_decode each (fewer where the model's
// training context ends first). The KV cache is f32 and flash
// attention off, so the numbers differ from kvspan's (fp32 KV) only by summation order.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/peers/ids_io.h"
#include "llama.h"

namespace {

struct Options {
  std::string model;
  std::string ids;
  std::string logits_out;
  int n_predict = 0;
  int threads = 2;
};

[[noreturn]] void Usage(const char* error) {
  if (error != nullptr) std::fprintf(stderr, "llama_ids: %s\n", error);
  std::fprintf(stderr,
               "usage: llama_ids --model M.gguf --ids FILE [--n-predict N] [--threads T] [--logits-out FILE]\n");
  std::exit(2);
}

Options ParseFlags(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") Usage(nullptr);
    if (i + 1 >= argc) Usage(("missing value for " + arg).c_str());
    const char* value = argv[++i];
    if (arg == "--model") o.model = value;
    else if (arg == "--ids") o.ids = value;
    else if (arg == "--logits-out") o.logits_out = value;
    else if (arg == "--n-predict") o.n_predict = std::atoi(value);
    else if (arg == "--threads") o.threads = std::atoi(value);
    else Usage(("unknown flag " + arg).c_str());
  }
  if (o.model.empty() || o.ids.empty()) Usage("--model and --ids are required");
  if (o.n_predict < 0 || o.threads < 1) Usage("--n-predict must be >= 0 and --threads >= 1");
  return o;
}

// Decodes `ids` at positions pos.. of sequence 0, with logits for every token or only the last.
void Decode(llama_context* ctx, const std::vector<llama_token>& ids, int pos, bool all_logits) {
  llama_batch batch = llama_batch_init(static_cast<int32_t>(ids.size()), 0, 1);
  for (size_t i = 0; i < ids.size(); ++i) {
    batch.token[i] = ids[i];
    batch.pos[i] = pos + static_cast<int>(i);
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = all_logits || i + 1 == ids.size();
  }
  batch.n_tokens = static_cast<int32_t>(ids.size());
  if (int rc = llama_decode(ctx, batch); rc != 0) {
    std::fprintf(stderr, "llama_ids: llama_decode returned %d\n", rc);
    std::exit(1);
  }
  llama_batch_free(batch);
}

// llama.cpp's loader and context log at INFO to stderr; keep its warnings and errors only.
void LogWarningsOnly(ggml_log_level level, const char* text, void* /*user*/) {
  if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseFlags(argc, argv);
  std::vector<std::vector<llama_token>> seqs;
  if (!kvspan::peers::ReadIdFile(o.ids, &seqs)) {
    std::fprintf(stderr, "llama_ids: cannot read ids from %s\n", o.ids.c_str());
    return 1;
  }
  if (seqs.empty()) Usage("--ids holds no sequence");
  size_t max_len = 0;
  for (const auto& s : seqs) max_len = std::max(max_len, s.size());

  llama_log_set(LogWarningsOnly, nullptr);
  llama_backend_init();
  llama_model* model = llama_model_load_from_file(o.model.c_str(), llama_model_default_params());
  if (model == nullptr) {
    std::fprintf(stderr, "llama_ids: cannot load %s\n", o.model.c_str());
    return 1;
  }
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  llama_context_params cparams = llama_context_default_params();
  const int n_ctx_train = llama_model_n_ctx_train(model);
  cparams.n_ctx = static_cast<uint32_t>(std::min<size_t>(max_len + o.n_predict, n_ctx_train));
  cparams.n_batch = cparams.n_ctx;
  cparams.n_ubatch = cparams.n_ctx;
  cparams.n_seq_max = 1;
  cparams.n_threads = o.threads;
  cparams.n_threads_batch = o.threads;
  cparams.type_k = GGML_TYPE_F32;
  cparams.type_v = GGML_TYPE_F32;
  cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  llama_context* ctx = llama_init_from_model(model, cparams);
  if (ctx == nullptr) {
    std::fprintf(stderr, "llama_ids: cannot create a context of %u tokens\n", cparams.n_ctx);
    return 1;
  }

  std::FILE* logits_out = nullptr;
  if (!o.logits_out.empty() && (logits_out = std::fopen(o.logits_out.c_str(), "wb")) == nullptr) {
    std::fprintf(stderr, "llama_ids: cannot write %s\n", o.logits_out.c_str());
    return 1;
  }
  kvspan::peers::IdsReport report;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const std::vector<llama_token>& ids = seqs[s];
    if (static_cast<int>(ids.size()) > n_ctx_train) {
      std::fprintf(stderr, "llama_ids: sequence %zu: %zu tokens, beyond the model's context %d\n", s, ids.size(),
                   n_ctx_train);
      return 1;
    }
    for (llama_token id : ids) {
      if (id < 0 || id >= n_vocab) {
        std::fprintf(stderr, "llama_ids: sequence %zu: id %d outside the vocabulary of %d\n", s, id, n_vocab);
        return 1;
      }
    }
    llama_memory_clear(llama_get_memory(ctx), true);
    Decode(ctx, ids, 0, /*all_logits=*/true);
    double nll = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      const float* row = llama_get_logits_ith(ctx, static_cast<int32_t>(t));
      if (logits_out != nullptr) std::fwrite(row, sizeof(float), n_vocab, logits_out);
      if (t + 1 < ids.size()) nll += kvspan::peers::NextTokenNll(row, n_vocab, ids[t + 1]);
    }
    std::vector<llama_token> greedy;
    const int n_predict = kvspan::peers::GreedyTokens(o.n_predict, ids.size(), n_ctx_train);
    for (int i = 0; i < n_predict; ++i) {
      if (i > 0) Decode(ctx, {greedy.back()}, static_cast<int>(ids.size()) + i - 1, /*all_logits=*/false);
      greedy.push_back(kvspan::peers::Argmax(llama_get_logits_ith(ctx, -1), n_vocab));
    }
    report.AddSequence(s, ids.size(), nll, greedy);
  }
  if (logits_out != nullptr && std::fclose(logits_out) != 0) {
    std::fprintf(stderr, "llama_ids: writing %s failed\n", o.logits_out.c_str());
    return 1;
  }
  report.PrintTotal();
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
