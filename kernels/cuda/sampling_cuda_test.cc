// sampling_cuda.h against model::SampleWithUniform (model/sampler.h) on fresh random logits:
// built twice, on the GPU (kernels_cuda_test; skips without a device) and in the CPU
// emulator (kernels_cuda_emulated_test, which runs everywhere). The input checks run in both.
//
// The device token must equal the reference's, except where the stated bound allows the
// neighbour: u within eps = vocab · (2^-F + 2^-50) of a CDF boundary, or top_p within eps
// of a prefix's share of the mass (sampling_cuda.h derives it). Such a difference is checked
// against the test's own long-double reading of the rule: the device's token must be the one
// across that boundary. Rows aim u and top_p at boundaries on purpose, exactly and 3 · eps
// to either side (where the tokens must agree).
#include "kernels/cuda/sampling_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device_memory.h"
#include "model/sampler.h"

namespace kvspan::kernels {
namespace {

using ::kvspan::testing::StatusIs;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

// sampling_cuda.h's bound on how far a CDF boundary (or a prefix's share) moves.
double Epsilon(int vocab) {
  int c = 0;
  while ((int64_t{1} << c) < vocab) ++c;
  return vocab * (std::ldexp(1.0, -(63 - c)) + std::ldexp(1.0, -50));
}

enum class Fill { kNormal, kTies, kNonFinite, kPeaked, kNoneFinite };
constexpr Fill kFills[] = {Fill::kNormal, Fill::kTies, Fill::kNonFinite, Fill::kPeaked, Fill::kNoneFinite};

std::vector<float> MakeLogits(Fill fill, int vocab, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> x(vocab);
  for (int i = 0; i < vocab; ++i) {
    switch (fill) {
      case Fill::kNormal:
        x[i] = normal(rng);
        break;
      case Fill::kTies: {
        // Five levels, -0 and +0 among them (equal, so a tie broken by id).
        static constexpr float kLevels[] = {-1.0f, -0.0f, 0.0f, 0.5f, 2.0f};
        x[i] = kLevels[pick(rng) % 5];
        break;
      }
      case Fill::kNonFinite: {
        const int r = pick(rng);
        x[i] = r < 10 ? -kInf : r < 15 ? kNan : r < 17 ? kInf : normal(rng);
        break;
      }
      case Fill::kPeaked:
        x[i] = normal(rng) * 0.3f;
        break;
      case Fill::kNoneFinite:
        x[i] = pick(rng) % 2 ? -kInf : kNan;
        break;
    }
  }
  if (fill == Fill::kPeaked) x[std::uniform_int_distribution<int>(0, vocab - 1)(rng)] = 12.0f;
  return x;
}

// The test's own reading of SampleWithUniform's rule, in long double: the candidates kept by
// top-k in order and their cumulative mass, to aim u and top_p at boundaries and to judge a
// token that differs from the reference's.
struct OrderedMass {
  std::vector<int32_t> order;
  std::vector<long double> cum;  // cum[i]: the mass of order[0..i]

  long double Share(int count) const { return count == 0 ? 0.0L : cum[count - 1] / cum.back(); }
  // The nucleus cut for top_p: the shortest prefix whose share reaches it.
  int Cut(double top_p) const {
    if (top_p >= 1.0) return static_cast<int>(order.size());
    int c = 1;
    while (c < static_cast<int>(order.size()) && Share(c) < top_p) ++c;
    return c;
  }
};

OrderedMass Order(absl::Span<const float> logits, const model::SamplingOptions& o) {
  OrderedMass m;
  for (int32_t i = 0; i < static_cast<int32_t>(logits.size()); ++i) {
    if (std::isfinite(logits[i])) m.order.push_back(i);
  }
  std::sort(m.order.begin(), m.order.end(),
            [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  if (o.top_k > 0 && static_cast<size_t>(o.top_k) < m.order.size()) m.order.resize(o.top_k);
  if (m.order.empty() || o.temperature == 0) return m;
  const double max_scaled = logits[m.order[0]] / o.temperature;
  long double acc = 0;
  for (int32_t id : m.order) {
    acc += std::exp(logits[id] / o.temperature - max_scaled);
    m.cum.push_back(acc);
  }
  return m;
}

// Empty when `device` is what the bound allows for (u, top_p) although the reference chose
// another token: under some nucleus cut c whose share is within eps of top_p (the
// reference's own cut among them), u lies within eps of the device token's CDF interval, so
// the two tokens are neighbours across a boundary within eps of u (any tokens between them
// hold less than eps of the mass). Otherwise the reason it is not.
std::string JudgeDifference(const OrderedMass& m, const model::SamplingOptions& o, double u, int32_t device,
                            double eps) {
  const int n = static_cast<int>(m.order.size());
  const auto at = std::find(m.order.begin(), m.order.end(), device);
  if (at == m.order.end()) return absl::StrCat("token ", device, " is not a candidate after top-k");
  const int pos = static_cast<int>(at - m.order.begin());
  for (int c = pos + 1; c <= n; ++c) {
    const bool cut_possible =
        o.top_p >= 1.0 ? c == n : (m.Share(c - 1) < o.top_p + eps && m.Share(c) >= o.top_p - eps);
    if (!cut_possible) continue;
    const long double kept = m.cum[c - 1];
    const long double low = pos == 0 ? 0.0L : m.cum[pos - 1] / kept;
    const long double high = m.cum[pos] / kept;
    if (u >= low - eps && u <= high + eps) return "";
  }
  return absl::StrCat("token ", device, " at position ", pos, " of ", n, ": u is not within eps of its CDF interval");
}

struct Row {
  int content = 0;  // which logits row of the case
  model::SamplingOptions options;
  double u = 0;
};

// Runs `rows` on the device over `contents` (each a vocab-long row), stored row_stride
// floats apart with poisoned padding, and checks every token.
void CheckRows(int vocab, const std::vector<std::vector<float>>& contents, const std::vector<Row>& rows) {
  const int64_t stride = vocab + 3;
  std::vector<float> host(rows.size() * stride, 1e30f);  // padding: larger than every logit
  std::vector<SampleCudaRow> params(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    std::copy(contents[rows[r].content].begin(), contents[rows[r].content].end(), host.begin() + r * stride);
    params[r] = {.temperature = rows[r].options.temperature,
                 .top_k = rows[r].options.top_k,
                 .top_p = rows[r].options.top_p,
                 .u = rows[r].u};
  }
  DeviceBuffer logits, out;
  ASSERT_OK(logits.Assign(host.data(), static_cast<int64_t>(host.size()) * 4));
  const std::vector<int32_t> poison(rows.size(), -7);
  ASSERT_OK(out.Assign(poison.data(), static_cast<int64_t>(poison.size()) * 4));
  SampleCudaParams p;
  p.logits = logits.as<float>();
  p.row_stride = stride;
  p.rows = params.data();
  p.out = out.as<int32_t>();
  p.num_rows = static_cast<int>(rows.size());
  p.vocab = vocab;
  ASSERT_OK(SampleCuda(p, nullptr));
  ASSERT_OK(CudaSynchronize());
  std::vector<int32_t> got(rows.size());
  ASSERT_OK(out.CopyToHost(got.data(), static_cast<int64_t>(got.size()) * 4));

  const double eps = Epsilon(vocab);
  model::SamplingScratch scratch;
  int differences = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    const Row& row = rows[r];
    const std::vector<float>& x = contents[row.content];
    const int32_t want = model::SampleWithUniform(x, row.options, row.u, &scratch);
    if (got[r] == want) continue;
    const std::string where = absl::StrCat("vocab ", vocab, " row ", r, " temperature ", row.options.temperature,
                                           " top_k ", row.options.top_k, " top_p ", row.options.top_p, " u ", row.u,
                                           ": device ", got[r], ", reference ", want);
    // Greedy, no finite logit or a single candidate: no sum decides, so no tolerance.
    const OrderedMass m = Order(x, row.options);
    ASSERT_FALSE(row.options.temperature == 0 || m.order.size() <= 1) << where;
    const std::string why = JudgeDifference(m, row.options, row.u, got[r], eps);
    ASSERT_EQ(why, "") << where;
    ++differences;
  }
  // Informational: how many rows took the tolerance (each was judged above).
  if (differences > 0) std::printf("vocab %d: %d of %zu tokens differ within eps\n", vocab, differences, rows.size());
}

// Rows over `contents`: each (temperature, top_k, top_p) of the grid with probability
// `share`, each with a random u, a u aimed at a CDF boundary (exactly, or 3 · eps to one side),
// or a top_p aimed at a prefix's share.
std::vector<Row> MakeRows(int vocab, const std::vector<std::vector<float>>& contents, double share,
                          std::mt19937& rng) {
  const double eps = Epsilon(vocab);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<Row> rows;
  for (int c = 0; c < static_cast<int>(contents.size()); ++c) {
    for (double temperature : {0.0, 0.5, 1.0, 2.0}) {
      for (int top_k : {0, 1, 40, vocab + 5}) {
        for (double top_p : {1.0, 0.9, 0.5, 1e-6}) {
          if (uniform(rng) >= share) continue;
          Row row;
          row.content = c;
          row.options = {.temperature = temperature, .top_k = top_k, .top_p = top_p};
          row.u = uniform(rng);
          const OrderedMass m = Order(contents[c], row.options);
          const int kind = std::uniform_int_distribution<int>(0, 5)(rng);
          if (temperature > 0 && m.order.size() > 1 && kind >= 2) {
            if (kind == 5 && top_p < 1.0) {
              // top_p at a prefix's share, exactly or 3 · eps off.
              const int j = std::uniform_int_distribution<int>(1, static_cast<int>(m.order.size()) - 1)(rng);
              const double at = static_cast<double>(m.Share(j));
              const double shift = std::uniform_int_distribution<int>(-1, 1)(rng) * 3 * eps;
              if (at + shift > 0 && at + shift < 1) row.options.top_p = at + shift;
            } else {
              const int cut = m.Cut(row.options.top_p);
              if (cut > 1) {
                const int j = std::uniform_int_distribution<int>(1, cut - 1)(rng);
                const double boundary = static_cast<double>(m.cum[j - 1] / m.cum[cut - 1]);
                const double shift = kind == 2 ? 0.0 : kind == 3 ? 3 * eps : -3 * eps;
                if (boundary + shift >= 0 && boundary + shift < 1) row.u = boundary + shift;
              }
            }
          }
          rows.push_back(row);
        }
      }
    }
  }
  // The edges of u.
  rows.push_back({.content = 0, .options = {.temperature = 1.0}, .u = 0.0});
  rows.push_back({.content = 0, .options = {.temperature = 1.0}, .u = 1.0 - 0x1.0p-53});
  return rows;
}

class SamplingCudaTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

// Every fill (normal, heavy ties with -0/+0, -inf/NaN/+inf, one peak, nothing finite) ×
// the (temperature, top_k, top_p) grid, sampled more sparsely where the emulator is slow.
TEST_P(SamplingCudaTest, MatchesSampleWithUniform) {
  const int vocab = GetParam();
  std::mt19937 rng(1000 + vocab);
  std::vector<std::vector<float>> contents;
  for (Fill fill : kFills) contents.push_back(MakeLogits(fill, vocab, rng));
  // An emulated row costs ~0.4 ms at the small vocabularies (barriers), ~20 ms at 128256.
  const double share = vocab == 1 ? 0.3 : vocab <= 1000 ? 1.0 : vocab <= 32000 ? 0.15 : 0.06;
  const int repeats = vocab == 7 ? 2 : 1;  // more draws where rows are cheap
  for (int rep = 0; rep < repeats; ++rep) {
    CheckRows(vocab, contents, MakeRows(vocab, contents, share, rng));
    if (::testing::Test::HasFatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Vocab, SamplingCudaTest, ::testing::Values(1, 7, 1000, 32000, 128256),
                         [](const ::testing::TestParamInfo<int>& info) { return absl::StrCat("vocab", info.param); });

TEST(SamplingCudaErrorsTest, BadParamsAreInvalidArgument) {
  float logits_storage[4] = {0, 1, 2, 3};
  int32_t out_storage[1];
  SampleCudaRow row;
  SampleCudaParams good;
  good.logits = logits_storage;  // never read: every call below fails its checks first
  good.row_stride = 4;
  good.rows = &row;
  good.out = out_storage;
  good.num_rows = 1;
  good.vocab = 4;
  auto expect_invalid = [](SampleCudaParams p, const std::string& what) {
    EXPECT_THAT(SampleCuda(p, nullptr), StatusIs(absl::StatusCode::kInvalidArgument)) << what;
  };
  SampleCudaParams p = good;
  p.num_rows = 0;
  expect_invalid(p, "no rows");
  p = good;
  p.vocab = 0;
  expect_invalid(p, "vocab 0");
  p = good;
  p.row_stride = 3;
  expect_invalid(p, "row stride below vocab");
  p = good;
  p.logits = nullptr;
  expect_invalid(p, "null logits");
  p = good;
  p.rows = nullptr;
  expect_invalid(p, "null rows");
  p = good;
  p.out = nullptr;
  expect_invalid(p, "null out");
  // The options ValidateSamplingOptions rejects, and u outside [0, 1) unless greedy.
  const std::vector<SampleCudaRow> bad = {
      {.temperature = -1}, {.temperature = kNan},         {.temperature = kInf}, {.top_k = -1},
      {.top_p = 0},        {.top_p = 1.5},                {.top_p = kNan},       {.u = 1.0},
      {.u = -0.25},        {.u = kNan},
  };
  for (const SampleCudaRow& b : bad) {
    const model::SamplingOptions o{.temperature = b.temperature, .top_k = b.top_k, .top_p = b.top_p};
    const bool bad_u = !(b.u >= 0 && b.u < 1);
    if (!bad_u) {
      EXPECT_THAT(model::ValidateSamplingOptions(o), StatusIs(absl::StatusCode::kInvalidArgument));
    }
    // The bad row second in a batch of three.
    const std::vector<SampleCudaRow> batch = {SampleCudaRow{}, b, SampleCudaRow{}};
    p = good;
    p.rows = batch.data();
    p.num_rows = 3;
    expect_invalid(p, absl::StrCat("temperature ", b.temperature, " top_k ", b.top_k, " top_p ", b.top_p, " u ", b.u));
  }
  // A greedy row ignores u.
  if (CudaDeviceCount() > 0) {
    DeviceBuffer d_logits, d_out;
    ASSERT_OK(d_logits.Assign(logits_storage, sizeof(logits_storage)));
    ASSERT_OK(d_out.Reserve(4));
    const SampleCudaRow greedy{.temperature = 0, .u = 7.0};
    p = good;
    p.logits = d_logits.as<float>();
    p.out = d_out.as<int32_t>();
    p.rows = &greedy;
    ASSERT_OK(SampleCuda(p, nullptr));
    ASSERT_OK(CudaSynchronize());
    int32_t token = -1;
    ASSERT_OK(d_out.CopyToHost(&token, 4));
    EXPECT_EQ(token, 3);
  }
}

}  // namespace
}  // namespace kvspan::kernels
