// What bench/peers/llama_ids.cc (llama.cpp) and bench/peers/kvspan_ids.cc (kvspan) share, so
// that both engines read the same id files and print the same lines, which
// bench/peers/compare_outputs.py compares. Header-only and plain C++17 (no Abseil):
// llama_ids is compiled outside this repository's CMake, against llama.cpp alone.
//
// Id file: one sequence per line, token ids separated by whitespace; empty lines are skipped.
// Output lines (stdout):
//   seq I: tokens N, nll X, greedy ID ID ...
//   total: sequences S, predicted P, mean nll M, ppl E
// nll: the summed -log softmax(logits[t])[ids[t + 1]] over t < N - 1, in double; greedy: the
// argmax continuation after the sequence (ties: the lowest id).
// Logits file: every sequence's logits, [N, vocab] float32 row-major each, concatenated.
#ifndef KVSPAN_BENCH_PEERS_IDS_IO_H_
#define KVSPAN_BENCH_PEERS_IDS_IO_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace kvspan::peers {

// Reads an id file into `seqs`. Returns false (and leaves `seqs` partial) when unreadable or
// when a word is not an integer.
inline bool ReadIdFile(const std::string& path, std::vector<std::vector<int32_t>>* seqs) {
  std::ifstream in(path);
  if (!in) return false;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::vector<int32_t> ids;
    std::string word;
    while (words >> word) {
      char* end = nullptr;
      const long id = std::strtol(word.c_str(), &end, 10);
      if (*end != '\0') return false;
      ids.push_back(static_cast<int32_t>(id));
    }
    if (!ids.empty()) seqs->push_back(std::move(ids));
  }
  return true;
}

// -log softmax(row)[target], in double. REQUIRES: 0 <= target < vocab.
inline double NextTokenNll(const float* row, int vocab, int32_t target) {
  const double max = *std::max_element(row, row + vocab);
  double sum = 0;
  for (int v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
  return max + std::log(sum) - row[target];
}

inline int32_t Argmax(const float* row, int vocab) {
  return static_cast<int32_t>(std::max_element(row, row + vocab) - row);
}

// Greedy tokens to generate after a sequence of `num_tokens`: `requested`, fewer when the
// model's context of `context_tokens` positions ends first (the last greedy token is picked
// from the logits of position context_tokens - 1 and never fed back).
inline int GreedyTokens(int requested, size_t num_tokens, int context_tokens) {
  return std::max(0, std::min<int>(requested, context_tokens - static_cast<int>(num_tokens) + 1));
}

// Sums the per-sequence lines into the "total:" line.
class IdsReport {
 public:
  void AddSequence(size_t index, size_t num_tokens, double nll, const std::vector<int32_t>& greedy) {
    std::string ids;
    for (int32_t id : greedy) ids += " " + std::to_string(id);
    std::printf("seq %zu: tokens %zu, nll %.6f, greedy%s\n", index, num_tokens, nll, ids.c_str());
    total_nll_ += nll;
    predicted_ += static_cast<long>(num_tokens) - 1;
    ++sequences_;
  }
  void PrintTotal() const {
    const double mean = predicted_ > 0 ? total_nll_ / predicted_ : 0.0;
    std::printf("total: sequences %zu, predicted %ld, mean nll %.6f, ppl %.4f\n", sequences_, predicted_, mean,
                std::exp(mean));
  }

 private:
  double total_nll_ = 0;
  long predicted_ = 0;
  size_t sequences_ = 0;
};

}  // namespace kvspan::peers

#endif  // KVSPAN_BENCH_PEERS_IDS_IO_H_
