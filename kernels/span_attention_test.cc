// Attention over compressed spans: the double-precision reference against kvcache's own
// dequantization, the fast path against the reference over many shapes, and the full
// composition (compressed blocks + dense window, merged by log-sum-exp) against plain
// softmax attention written out directly in double precision.
#include "kernels/span_attention.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/cpu_features.h"
#include "common/float16.h"
#include "common/thread_pool.h"
#include "gtest/gtest.h"
#include "kernels/attention.h"
#include "kernels/cpu_isa.h"
#include "kvcache/entry_block.h"

namespace kvspan::kernels {
namespace {

using kvcache::Codec;
using kvcache::EntryBlock;

SpanBlockView ViewOf(const EntryBlock& b) {
  SpanBlockView v;
  v.codec = static_cast<SpanCodec>(b.codec);
  v.group_size = b.group_size;
  v.num_entries = b.num_entries();
  v.head_dim = b.head_dim;
  v.key_data = b.key_data.data();
  v.value_data = b.value_data.data();
  v.key_params = b.key_params.data();
  v.value_params = b.value_params.data();
  v.log_counts = b.log_counts.data();
  return v;
}

std::vector<float> Normal(int64_t count, std::mt19937_64& rng, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> out(count);
  for (float& x : out) x = dist(rng);
  return out;
}

struct RandomBlock {
  EntryBlock block;
  std::vector<float> keys, values;  // the dense inputs
};

RandomBlock MakeBlock(Codec codec, int group_size, int n, int hd, bool with_log_counts, std::mt19937_64& rng) {
  RandomBlock rb;
  rb.keys = Normal(int64_t{n} * hd, rng);
  rb.values = Normal(int64_t{n} * hd, rng);
  std::vector<int32_t> positions(n);
  std::vector<float> log_counts(n, 0.0f);
  std::uniform_real_distribution<float> lc(0.0f, 2.0f);
  for (int i = 0; i < n; ++i) {
    positions[i] = i;
    if (with_log_counts) log_counts[i] = lc(rng);
  }
  kvcache::DenseEntries entries{hd, positions, log_counts, rb.keys, rb.values};
  auto block = kvcache::EncodeBlock({codec, group_size}, entries);
  EXPECT_TRUE(block.ok()) << block.status();
  rb.block = *std::move(block);
  return rb;
}

struct States {
  std::vector<float> m, s, o;
  States(int rows, int hd) : m(rows), s(rows), o(int64_t{rows} * hd) { InitPartial(view(), rows, hd); }
  PartialState view() { return {m.data(), s.data(), o.data()}; }
};

constexpr Codec kCodecs[] = {Codec::kBF16, Codec::kFP16, Codec::kInt8, Codec::kInt4, Codec::kInt2};

// The fast path's variants a block runs through: the key dot product (fp32, or int8 queries
// for the quantized codecs) and, for the integer one, each ISA this CPU supports (the
// fp32 path's code is the same on both).
struct Variant {
  SpanKeyDot key_dot = SpanKeyDot::kFloat;
  CpuIsa isa = CpuIsa::kAvx2;
};
std::vector<Variant> VariantsOf(Codec codec) {
  std::vector<Variant> out = {{SpanKeyDot::kFloat, SelectedCpuIsa().isa}};
  if (!kvcache::IsQuantized(codec)) return out;
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (CpuSupportsIsa(DetectCpuFeatures(), isa)) out.push_back({SpanKeyDot::kInt8Query, isa});
  }
  return out;
}
std::string NameOf(const Variant& v) {
  return v.key_dot == SpanKeyDot::kFloat ? "float keys" : absl::StrCat("int8 queries, ", CpuIsaName(v.isa));
}

TEST(SpanAttentionTest, CodecIdsMirrorKvcache) {
  EXPECT_EQ(static_cast<int>(SpanCodec::kBF16), static_cast<int>(Codec::kBF16));
  EXPECT_EQ(static_cast<int>(SpanCodec::kFP16), static_cast<int>(Codec::kFP16));
  EXPECT_EQ(static_cast<int>(SpanCodec::kInt8), static_cast<int>(Codec::kInt8));
  EXPECT_EQ(static_cast<int>(SpanCodec::kInt4), static_cast<int>(Codec::kInt4));
  EXPECT_EQ(static_cast<int>(SpanCodec::kInt2), static_cast<int>(Codec::kInt2));
}

// The reference's own dequantization equals kvcache::DecodeBlockKeys/Values bit for bit:
// a one-entry sub-block with one-hot queries and scale 1 makes m = k_hat[e, d] and
// o / s = v_hat[e, :] exactly.
TEST(SpanAttentionTest, RefDequantizationEqualsKvcacheDecode) {
  std::mt19937_64 rng(7);
  for (Codec codec : kCodecs) {
    for (int gs : {1, 5, 16, 32}) {
      for (int hd : {8, 30, 64}) {
        const int n = 37;
        RandomBlock rb = MakeBlock(codec, gs, n, hd, false, rng);
        const EntryBlock& b = rb.block;
        const std::vector<float> k = kvcache::DecodeBlockKeys(b);
        const std::vector<float> v = kvcache::DecodeBlockValues(b);
        std::vector<float> eye(int64_t{hd} * hd, 0.0f);
        for (int d = 0; d < hd; ++d) eye[d * hd + d] = 1.0f;
        const bool quantized = kvcache::IsQuantized(codec);
        const int vgroups = quantized ? (hd + b.group_size - 1) / b.group_size : 0;
        for (int e = 0; e < n; ++e) {
          SpanBlockView one = ViewOf(b);
          one.num_entries = 1;
          one.log_counts = nullptr;
          const int64_t row = kvcache::CodeRowBytes(codec, hd);
          one.key_data += e * row;
          one.value_data += e * row;
          if (quantized) {
            one.key_params += int64_t{e / b.group_size} * hd * 2;
            one.value_params += int64_t{e} * vgroups * 2;
          }
          States st(hd, hd);
          SpanAttentionParams p{one, eye.data(), hd, hd, 1, 1.0f, st.view()};
          SpanAttentionRef(p);
          std::vector<float> out(int64_t{hd} * hd);
          FinishPartial(st.view(), hd, 1, hd, out.data(), hd);
          for (int d = 0; d < hd; ++d) {
            ASSERT_EQ(st.m[d], k[e * hd + d]) << kvcache::CodecName(codec) << " e=" << e << " d=" << d;
            ASSERT_EQ(out[d], v[e * hd + d]) << kvcache::CodecName(codec) << " e=" << e << " d=" << d;
          }
        }
      }
    }
  }
}

// (codec, group size, head_dim, GQA group)
using Shape = std::tuple<Codec, int, int, int>;
// The fast path's finished outputs and states against the reference's: 2e-5 absolute +
// 2e-4 relative (fp32 against double).
void ExpectStatesMatch(States& fast, States& ref, int num_q, int group, int hd) {
  std::vector<float> out_fast(int64_t{num_q} * group * hd), out_ref(out_fast.size());
  FinishPartial(fast.view(), num_q, group, hd, out_fast.data(), int64_t{group} * hd);
  FinishPartial(ref.view(), num_q, group, hd, out_ref.data(), int64_t{group} * hd);
  for (size_t i = 0; i < out_ref.size(); ++i) {
    ASSERT_LE(std::abs(out_fast[i] - out_ref[i]), 2e-5 + 2e-4 * std::abs(out_ref[i])) << "i=" << i;
  }
  for (int r = 0; r < num_q * group; ++r) {
    ASSERT_LE(std::abs(fast.m[r] - ref.m[r]), 2e-5 + 2e-4 * std::abs(ref.m[r])) << r;
    ASSERT_LE(std::abs(fast.s[r] - ref.s[r]), 2e-4 * ref.s[r]) << r;
  }
}

class SpanAttentionSweep : public ::testing::TestWithParam<Shape> {};

// head_dim 30 and 33 exercise the scalar tails of the unpackers and partial code bytes.
// Fast vs reference after merging several blocks (entries 1..64, with and without log
// counts) into the same states. Tolerance |out - ref| <= 2e-5 + 2e-4 * |ref| on the
// finished output, and the same on m and on s (relative to s): fp32 accumulation of
// head_dim <= 128 products and <= 64 exponentials.
// Each variant (VariantsOf) against the reference computing the same key dot product
// (SpanKeyDot::kInt8Query: the reference quantizes the same fp32 query, so only fp32
// rounding separates them: the same tolerance).
TEST_P(SpanAttentionSweep, FastMatchesReference) {
  const auto [codec, gs, hd, group] = GetParam();
  std::mt19937_64 rng(1000 + static_cast<int>(codec) * 131 + gs * 17 + hd * 3 + group);
  ThreadPool pool(2);
  for (const Variant& variant : VariantsOf(codec)) {
    for (int num_q : {1, 3, 9}) {
      for (bool with_lc : {false, true}) {
        States fast(num_q * group, hd), ref(num_q * group, hd);
        const std::vector<float> q = Normal(int64_t{num_q} * group * hd, rng);
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
        for (int n : {1, 7, 33, 64}) {
          RandomBlock rb = MakeBlock(codec, gs, n, hd, with_lc, rng);
          SpanBlockView view = ViewOf(rb.block);
          if (!with_lc) view.log_counts = nullptr;
          SpanAttentionParams p{view, q.data(), int64_t{group} * hd, num_q, group, scale, fast.view()};
          p.key_dot = variant.key_dot;
          SpanAttention(p, num_q > 3 ? &pool : nullptr, variant.isa);
          p.state = ref.view();
          SpanAttentionRef(p);
        }
        SCOPED_TRACE(::testing::Message() << NameOf(variant) << " num_q=" << num_q << " lc=" << with_lc);
        ExpectStatesMatch(fast, ref, num_q, group, hd);
        if (HasFatalFailure()) return;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SpanAttentionSweep,
    ::testing::Combine(::testing::ValuesIn(kCodecs), ::testing::Values(1, 16, 32), ::testing::Values(32, 64, 128, 30, 33),
                       ::testing::Values(1, 4, 8)),
    [](const ::testing::TestParamInfo<Shape>& info) {
      return absl::StrCat(kvcache::CodecName(std::get<0>(info.param)), "_g", std::get<1>(info.param), "_d",
                          std::get<2>(info.param), "_gqa", std::get<3>(info.param));
    });

// Shared blocks (cross-layer sharing): keys from one stored block, values from another,
// per-entry key and value scales in [0, 2]. Same shapes and tolerance as the sweep above.
class SpanAttentionScaledSweep : public ::testing::TestWithParam<Shape> {};

TEST_P(SpanAttentionScaledSweep, FastMatchesReference) {
  const auto [codec, gs, hd, group] = GetParam();
  std::mt19937_64 rng(5000 + static_cast<int>(codec) * 131 + gs * 17 + hd * 3 + group);
  std::uniform_real_distribution<float> scale_dist(0.0f, 2.0f);
  ThreadPool pool(2);
  for (const Variant& variant : VariantsOf(codec))
  for (int num_q : {1, 9}) {
    SCOPED_TRACE(::testing::Message() << NameOf(variant) << " num_q=" << num_q);
    States fast(num_q * group, hd), ref(num_q * group, hd);
    const std::vector<float> q = Normal(int64_t{num_q} * group * hd, rng);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    for (int n : {1, 33, 64}) {
      RandomBlock key_block = MakeBlock(codec, gs, n, hd, true, rng);
      RandomBlock value_block = MakeBlock(codec, gs, n, hd, false, rng);
      std::vector<float> key_scales(n), value_scales(n);
      for (int e = 0; e < n; ++e) {
        key_scales[e] = scale_dist(rng);
        value_scales[e] = scale_dist(rng);
      }
      SpanBlockView view = ViewOf(key_block.block);
      view.value_data = value_block.block.value_data.data();
      view.value_params = value_block.block.value_params.data();
      view.key_scales = key_scales.data();
      view.value_scales = value_scales.data();
      SpanAttentionParams p{view, q.data(), int64_t{group} * hd, num_q, group, scale, fast.view()};
      p.key_dot = variant.key_dot;
      SpanAttention(p, num_q > 3 ? &pool : nullptr, variant.isa);
      p.state = ref.view();
      SpanAttentionRef(p);
    }
    ExpectStatesMatch(fast, ref, num_q, group, hd);
    if (HasFatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SpanAttentionScaledSweep,
    ::testing::Combine(::testing::ValuesIn(kCodecs), ::testing::Values(1, 32), ::testing::Values(32, 33, 128),
                       ::testing::Values(1, 4)),
    [](const ::testing::TestParamInfo<Shape>& info) {
      return absl::StrCat(kvcache::CodecName(std::get<0>(info.param)), "_g", std::get<1>(info.param), "_d",
                          std::get<2>(info.param), "_gqa", std::get<3>(info.param));
    });

// Null scales and all-ones scales are the same computation, bit for bit, in both paths.
TEST(SpanAttentionTest, NullScalesEqualAllOnes) {
  std::mt19937_64 rng(21);
  for (Codec codec : kCodecs) {
    const int num_q = 3, group = 2, hd = 33, n = 40;
    RandomBlock rb = MakeBlock(codec, 16, n, hd, true, rng);
    const std::vector<float> q = Normal(int64_t{num_q} * group * hd, rng);
    const std::vector<float> ones(n, 1.0f);
    SpanBlockView with_ones = ViewOf(rb.block);
    with_ones.key_scales = ones.data();
    with_ones.value_scales = ones.data();
    for (bool fast : {false, true}) {
      States a(num_q * group, hd), b(num_q * group, hd);
      SpanAttentionParams p{ViewOf(rb.block), q.data(), int64_t{group} * hd, num_q, group, 0.2f, a.view()};
      fast ? SpanAttention(p, nullptr) : SpanAttentionRef(p);
      p.block = with_ones;
      p.state = b.view();
      fast ? SpanAttention(p, nullptr) : SpanAttentionRef(p);
      EXPECT_EQ(a.m, b.m) << kvcache::CodecName(codec) << " fast=" << fast;
      EXPECT_EQ(a.s, b.s) << kvcache::CodecName(codec) << " fast=" << fast;
      EXPECT_EQ(a.o, b.o) << kvcache::CodecName(codec) << " fast=" << fast;
    }
  }
}

// A scaled bf16 block means the block whose codes were scaled before encoding. With
// power-of-two scales (and 0) bf16(s * x) == s * bf16(x) exactly, so the reference states
// agree to double rounding; the fast path within the sweep's tolerance.
TEST(SpanAttentionTest, ScalesEqualPrescaledBf16Codes) {
  std::mt19937_64 rng(22);
  const int num_q = 4, group = 2, hd = 32, n = 48;
  const float choices[] = {0.0f, 0.25f, 0.5f, 1.0f, 2.0f, 4.0f};
  std::uniform_int_distribution<int> pick(0, 5);
  RandomBlock rb = MakeBlock(Codec::kBF16, 0, n, hd, true, rng);
  std::vector<float> key_scales(n), value_scales(n), keys = rb.keys, values = rb.values;
  for (int e = 0; e < n; ++e) {
    key_scales[e] = choices[pick(rng)];
    value_scales[e] = choices[pick(rng)];
    for (int d = 0; d < hd; ++d) {
      keys[e * hd + d] *= key_scales[e];
      values[e * hd + d] *= value_scales[e];
    }
  }
  auto prescaled = kvcache::EncodeBlock(
      {Codec::kBF16, 0}, {hd, rb.block.positions, rb.block.log_counts, keys, values});
  ASSERT_TRUE(prescaled.ok()) << prescaled.status();
  SpanBlockView scaled = ViewOf(rb.block);
  scaled.key_scales = key_scales.data();
  scaled.value_scales = value_scales.data();
  const std::vector<float> q = Normal(int64_t{num_q} * group * hd, rng);
  States ref_scaled(num_q * group, hd), ref_prescaled(num_q * group, hd), fast_scaled(num_q * group, hd);
  SpanAttentionParams p{scaled, q.data(), int64_t{group} * hd, num_q, group, 0.17f, ref_scaled.view()};
  SpanAttentionRef(p);
  p.state = fast_scaled.view();
  SpanAttention(p, nullptr);
  p.block = ViewOf(*prescaled);
  p.state = ref_prescaled.view();
  SpanAttentionRef(p);
  for (int r = 0; r < num_q * group; ++r) {
    EXPECT_NEAR(ref_scaled.m[r], ref_prescaled.m[r], 1e-6 * (1 + std::abs(ref_prescaled.m[r]))) << r;
    EXPECT_NEAR(ref_scaled.s[r], ref_prescaled.s[r], 1e-6 * ref_prescaled.s[r]) << r;
    EXPECT_LE(std::abs(fast_scaled.s[r] - ref_prescaled.s[r]), 2e-4 * ref_prescaled.s[r]) << r;
    for (int d = 0; d < hd; ++d) {
      const float want = ref_prescaled.o[r * hd + d];
      EXPECT_NEAR(ref_scaled.o[r * hd + d], want, 1e-6 * (1 + std::abs(want))) << r << " " << d;
      EXPECT_LE(std::abs(fast_scaled.o[r * hd + d] - want), 2e-5 + 2e-4 * std::abs(want)) << r << " " << d;
    }
  }
}

// The big-work path (threads split the queries) agrees with the single-threaded one.
TEST(SpanAttentionTest, ThreadedMatchesSingleThreaded) {
  std::mt19937_64 rng(3);
  ThreadPool pool(2);
  const int num_q = 40, group = 4, hd = 64, n = 64;
  RandomBlock rb = MakeBlock(Codec::kInt4, 32, n, hd, true, rng);
  const std::vector<float> q = Normal(int64_t{num_q} * group * hd, rng);
  for (SpanKeyDot key_dot : {SpanKeyDot::kFloat, SpanKeyDot::kInt8Query}) {
    States a(num_q * group, hd), b(num_q * group, hd);
    SpanAttentionParams p{ViewOf(rb.block), q.data(), int64_t{group} * hd, num_q, group, 0.125f, a.view()};
    p.key_dot = key_dot;
    SpanAttention(p, &pool);
    p.state = b.view();
    SpanAttention(p, nullptr);
    EXPECT_EQ(a.m, b.m);
    EXPECT_EQ(a.s, b.s);
    EXPECT_EQ(a.o, b.o);
  }
}

// SpanKeyDot::kInt8Query: the integer sums are exact on both ISAs and the rest is the same
// fp32 code, so AVX2 and AVX-512 give the same states bit for bit.
TEST(SpanAttentionTest, Int8QueryIsasAgreeBitForBit) {
  if (!CpuSupportsIsa(DetectCpuFeatures(), CpuIsa::kAvx512)) GTEST_SKIP() << "CPU lacks avx512";
  std::mt19937_64 rng(31);
  for (Codec codec : {Codec::kInt8, Codec::kInt4, Codec::kInt2}) {
    for (int hd : {30, 33, 64, 100, 128, 256}) {
      const int num_q = 3, group = 4, n = 64;
      RandomBlock rb = MakeBlock(codec, 32, n, hd, true, rng);
      const std::vector<float> q = Normal(int64_t{num_q} * group * hd, rng);
      States a(num_q * group, hd), b(num_q * group, hd);
      SpanAttentionParams p{ViewOf(rb.block), q.data(), int64_t{group} * hd, num_q, group, 0.1f, a.view()};
      p.key_dot = SpanKeyDot::kInt8Query;
      SpanAttention(p, nullptr, CpuIsa::kAvx2);
      p.state = b.view();
      SpanAttention(p, nullptr, CpuIsa::kAvx512);
      EXPECT_EQ(a.m, b.m) << kvcache::CodecName(codec) << " hd=" << hd;
      EXPECT_EQ(a.s, b.s) << kvcache::CodecName(codec) << " hd=" << hd;
      EXPECT_EQ(a.o, b.o) << kvcache::CodecName(codec) << " hd=" << hd;
    }
  }
}

// The key code of (entry e, channel d) of a quantized block, from the stored layout.
int KeyCode(const EntryBlock& b, int e, int d) {
  const int bits = b.codec == Codec::kInt8 ? 8 : b.codec == Codec::kInt4 ? 4 : 2;
  const uint8_t byte = b.key_data[e * kvcache::CodeRowBytes(b.codec, b.head_dim) + d * bits / 8];
  return (byte >> (d * bits % 8)) & ((1 << bits) - 1);
}

// SpanKeyDot::kInt8Query's stated error bound (span_attention.h), between the two references
// (both in double: only the query quantization separates them). Every logit of a row moves
// by at most delta_e = key_scale_e * (s_q / 2) * sum_d |code_e,d - c|; with D = the row's
// max delta_e over all merged blocks, m moves by at most D, s by a factor within
// e^(+-2D), and each normalized weight w_e / sum w by a factor within e^(+-2D), so the
// finished output moves by at most (e^(2D) - 1) * max_e |value_scale_e * v_hat_e,d| per
// channel. Slack 1e-5 (relative) for the format's fp32 rounding of k_hat = zero + code *
// scale, which the exact reference includes and the integer decomposition does not.
TEST(SpanAttentionTest, Int8QueryWithinStatedBoundOfExactKeys) {
  std::mt19937_64 rng(41);
  std::uniform_real_distribution<float> scale_dist(0.0f, 2.0f);
  double worst_ratio = 0;  // largest observed |m error| / D, reported
  for (Codec codec : {Codec::kInt8, Codec::kInt4, Codec::kInt2}) {
    for (int gs : {1, 32}) {
      for (int hd : {32, 33, 128}) {
        for (bool scaled : {false, true}) {
          const int num_q = 2, group = 4, rows = num_q * group;
          const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
          const std::vector<float> q = Normal(int64_t{rows} * hd, rng);
          States exact(rows, hd), quant(rows, hd);
          std::vector<double> bound(rows, 0.0), vmax(int64_t{rows} * hd, 0.0);
          for (int n : {33, 64}) {
            RandomBlock rb = MakeBlock(codec, gs, n, hd, true, rng);
            const std::vector<float> v = kvcache::DecodeBlockValues(rb.block);
            std::vector<float> key_scales(n, 1.0f), value_scales(n, 1.0f);
            SpanBlockView view = ViewOf(rb.block);
            if (scaled) {
              for (int e = 0; e < n; ++e) key_scales[e] = scale_dist(rng), value_scales[e] = scale_dist(rng);
              view.key_scales = key_scales.data();
              view.value_scales = value_scales.data();
            }
            const int center = (codec == Codec::kInt8 ? 128 : codec == Codec::kInt4 ? 8 : 2);
            for (int r = 0; r < rows; ++r) {
              const float* qr = &q[int64_t{r} * hd];
              for (int e = 0; e < n; ++e) {
                const uint16_t* params = &rb.block.key_params[int64_t{e / gs} * hd * 2];
                float max_qs = 0.0f;
                double spread = 0.0;
                for (int d = 0; d < hd; ++d) {
                  max_qs = std::max(max_qs, std::abs(qr[d] * (scale * HalfToFloat(params[2 * d]))));
                  spread += std::abs(KeyCode(rb.block, e, d) - center);
                }
                bound[r] = std::max(bound[r], key_scales[e] * (max_qs / 127.0) / 2 * spread);
                for (int d = 0; d < hd; ++d) {
                  vmax[r * hd + d] = std::max<double>(vmax[r * hd + d], std::abs(value_scales[e] * v[e * hd + d]));
                }
              }
            }
            SpanAttentionParams p{view, q.data(), int64_t{group} * hd, num_q, group, scale, exact.view()};
            SpanAttentionRef(p);
            p.key_dot = SpanKeyDot::kInt8Query;
            p.state = quant.view();
            SpanAttentionRef(p);
          }
          std::vector<float> out_exact(int64_t{rows} * hd), out_quant(out_exact.size());
          FinishPartial(exact.view(), num_q, group, hd, out_exact.data(), int64_t{group} * hd);
          FinishPartial(quant.view(), num_q, group, hd, out_quant.data(), int64_t{group} * hd);
          SCOPED_TRACE(::testing::Message() << kvcache::CodecName(codec) << " g=" << gs << " hd=" << hd
                                            << " scaled=" << scaled);
          for (int r = 0; r < rows; ++r) {
            const double d = bound[r];
            const double growth = std::expm1(2 * d);
            ASSERT_LE(std::abs(quant.m[r] - exact.m[r]), d + 1e-5 * (1 + std::abs(exact.m[r]))) << "row " << r;
            ASSERT_LE(std::abs(quant.s[r] - exact.s[r]), (growth + 1e-5) * exact.s[r]) << "row " << r;
            for (int c = 0; c < hd; ++c) {
              ASSERT_LE(std::abs(out_quant[r * hd + c] - out_exact[r * hd + c]), (growth + 1e-5) * vmax[r * hd + c])
                  << "row " << r << " channel " << c;
            }
            if (d > 0) worst_ratio = std::max(worst_ratio, std::abs(quant.m[r] - exact.m[r]) / d);
          }
        }
      }
    }
  }
  RecordProperty("worst_m_error_over_bound", std::to_string(worst_ratio));
  std::printf("largest |m error| / stated bound: %.3f\n", worst_ratio);
}

// Dense partial + finish == AttentionRef (causal, GQA), fast and reference paths.
// Sliding window over a block: entries at positions <= query position - window are
// invisible. The fast path matches the reference when the cut falls inside the block; a
// window that covers the whole block equals no window exactly; a window that excludes the
// whole block leaves the state unchanged. The reference itself is checked against a plain
// softmax over the visible entries' dequantized keys and values.
TEST(SpanAttentionTest, SlidingWindowOverBlocks) {
  std::mt19937_64 rng(21);
  ThreadPool pool(2);
  constexpr int kHd = 32, kGroup = 2, kN = 40, kFirstEntry = 100;
  for (Codec codec : kCodecs) {
    RandomBlock rb = MakeBlock(codec, 8, kN, kHd, true, rng);
    for (int i = 0; i < kN; ++i) rb.block.positions[i] = kFirstEntry + i;
    SpanBlockView view = ViewOf(rb.block);
    view.positions = rb.block.positions.data();
    for (int num_q : {1, 7}) {
      const std::vector<float> q = Normal(int64_t{num_q} * kGroup * kHd, rng);
      const float scale = 1.0f / std::sqrt(float{kHd});
      const int32_t first_query = kFirstEntry + kN + 3;  // queries after the block
      for (int window : {10, 30, 44, 200}) {
        States fast(num_q * kGroup, kHd), ref(num_q * kGroup, kHd), none(num_q * kGroup, kHd);
        SpanAttentionParams p{view, q.data(), int64_t{kGroup} * kHd, num_q, kGroup, scale, fast.view(), window,
                              first_query};
        SpanAttention(p, num_q > 3 ? &pool : nullptr);
        p.state = ref.view();
        SpanAttentionRef(p);
        for (int r = 0; r < num_q * kGroup; ++r) {
          const int32_t cutoff = first_query + r / kGroup - window;  // visible: position > cutoff
          const int visible = std::clamp(kFirstEntry + kN - 1 - cutoff, 0, kN);
          if (visible == 0) {
            EXPECT_EQ(fast.s[r], 0.0f) << kvcache::CodecName(codec);
            EXPECT_EQ(ref.s[r], 0.0f);
            EXPECT_EQ(fast.m[r], -INFINITY);
            continue;
          }
          ASSERT_LE(std::abs(fast.m[r] - ref.m[r]), 2e-5 + 2e-4 * std::abs(ref.m[r])) << r;
          ASSERT_LE(std::abs(fast.s[r] - ref.s[r]), 2e-4 * ref.s[r]) << r;
          // Reference vs a plain softmax over the visible entries (positions > cutoff).
          const std::vector<float> dk = kvcache::DecodeBlockKeys(rb.block);
          const float* qr = q.data() + static_cast<int64_t>(r) * kHd;
          double mx = -INFINITY;
          std::vector<double> logit(kN);
          for (int e = kN - visible; e < kN; ++e) {
            double dot = 0;
            for (int d = 0; d < kHd; ++d) dot += double{qr[d]} * dk[e * kHd + d];
            logit[e] = scale * dot + rb.block.log_counts[e];
            mx = std::max(mx, logit[e]);
          }
          double sum = 0;
          for (int e = kN - visible; e < kN; ++e) sum += std::exp(logit[e] - mx);
          EXPECT_NEAR(ref.m[r], mx, 1e-5);
          EXPECT_NEAR(ref.s[r], sum, 1e-5 * sum);
        }
        if (window == 200) {  // covers everything: equal to no window
          SpanAttentionParams np{view, q.data(), int64_t{kGroup} * kHd, num_q, kGroup, scale, none.view()};
          SpanAttention(np, num_q > 3 ? &pool : nullptr);
          EXPECT_EQ(none.m, fast.m);
          EXPECT_EQ(none.s, fast.s);
          EXPECT_EQ(none.o, fast.o);
        }
      }
    }
  }
}

// The sliding window over a block with int8 queries: fast (both ISAs) vs the reference of
// the same key dot product, the sweep's tolerance; rows that see nothing stay empty.
TEST(SpanAttentionTest, SlidingWindowWithInt8Queries) {
  std::mt19937_64 rng(23);
  constexpr int kHd = 40, kGroup = 2, kN = 40, kFirstEntry = 100, kNumQ = 5;
  for (Codec codec : {Codec::kInt8, Codec::kInt4, Codec::kInt2}) {
    RandomBlock rb = MakeBlock(codec, 8, kN, kHd, true, rng);
    for (int i = 0; i < kN; ++i) rb.block.positions[i] = kFirstEntry + i;
    SpanBlockView view = ViewOf(rb.block);
    view.positions = rb.block.positions.data();
    const std::vector<float> q = Normal(int64_t{kNumQ} * kGroup * kHd, rng);
    for (const Variant& variant : VariantsOf(codec)) {
      if (variant.key_dot != SpanKeyDot::kInt8Query) continue;
      for (int window : {10, 30, 44}) {
        States fast(kNumQ * kGroup, kHd), ref(kNumQ * kGroup, kHd);
        SpanAttentionParams p{view, q.data(), int64_t{kGroup} * kHd, kNumQ, kGroup, 0.15f, fast.view(), window,
                              kFirstEntry + kN + 3};
        p.key_dot = SpanKeyDot::kInt8Query;
        SpanAttention(p, nullptr, variant.isa);
        p.state = ref.view();
        SpanAttentionRef(p);
        SCOPED_TRACE(::testing::Message() << kvcache::CodecName(codec) << " " << NameOf(variant) << " window=" << window);
        for (int r = 0; r < kNumQ * kGroup; ++r) {
          if (ref.s[r] == 0.0f) {
            EXPECT_EQ(fast.s[r], 0.0f) << r;
            EXPECT_EQ(fast.m[r], -INFINITY) << r;
          }
        }
        ExpectStatesMatch(fast, ref, kNumQ, kGroup, kHd);
      }
    }
  }
}

TEST(SpanAttentionTest, DensePartialMatchesAttentionRef) {
  std::mt19937_64 rng(11);
  ThreadPool pool(2);
  for (int hd : {32, 64}) {
    for (int group : {1, 4}) {
      for (auto [num_q, num_keys] : {std::pair{1, 1}, std::pair{1, 70}, std::pair{9, 9}, std::pair{20, 150}})
      for (int window : {0, 1, 5, 33}) {
        const int kv_heads = 2, heads = kv_heads * group;
        const std::vector<float> q = Normal(int64_t{num_q} * heads * hd, rng);
        const std::vector<float> k = Normal(int64_t{kv_heads} * num_keys * hd, rng);
        const std::vector<float> v = Normal(int64_t{kv_heads} * num_keys * hd, rng);
        std::vector<float> expected(int64_t{num_q} * heads * hd), fast(expected.size()), ref(expected.size());
        AttentionParams ap;
        ap.q = q.data(); ap.q_row_stride = int64_t{heads} * hd;
        ap.k = k.data(); ap.k_head_stride = int64_t{num_keys} * hd; ap.k_token_stride = hd;
        ap.v = v.data(); ap.v_head_stride = int64_t{num_keys} * hd; ap.v_token_stride = hd;
        ap.out = expected.data(); ap.out_row_stride = int64_t{heads} * hd;
        ap.num_q = num_q; ap.num_keys = num_keys; ap.num_heads = heads; ap.num_kv_heads = kv_heads;
        ap.head_dim = hd; ap.q_start = num_keys - num_q; ap.scale = 1.0f / std::sqrt(float(hd));
        ap.window = window;
        AttentionRef(ap);
        for (int g = 0; g < kv_heads; ++g) {
          States sf(num_q * group, hd), sr(num_q * group, hd);
          DensePartialParams p{q.data() + g * group * hd, int64_t{heads} * hd, num_q, group, hd,
                               k.data() + int64_t{g} * num_keys * hd, hd, v.data() + int64_t{g} * num_keys * hd, hd,
                               num_keys, num_keys - num_q, ap.scale, sf.view(), window};
          DenseAttentionPartial(p, &pool);
          p.state = sr.view();
          DenseAttentionPartialRef(p);
          FinishPartial(sf.view(), num_q, group, hd, fast.data() + g * group * hd, int64_t{heads} * hd);
          FinishPartial(sr.view(), num_q, group, hd, ref.data() + g * group * hd, int64_t{heads} * hd);
        }
        for (size_t i = 0; i < expected.size(); ++i) {
          ASSERT_LE(std::abs(ref[i] - expected[i]), 1e-6 + 1e-6 * std::abs(expected[i])) << i;
          ASSERT_LE(std::abs(fast[i] - expected[i]), 2e-5 + 2e-4 * std::abs(expected[i])) << i;
        }
      }
    }
  }
}

TEST(SpanAttentionTest, MergeWithEmptyStateIsIdentityAndEmptyFinishesToZero) {
  const int rows = 3, hd = 8;
  States a(rows, hd), empty(rows, hd);
  a.m = {1.0f, -2.0f, 0.5f};
  a.s = {2.0f, 1.0f, 3.0f};
  for (size_t i = 0; i < a.o.size(); ++i) a.o[i] = 0.25f * static_cast<float>(i);
  States copy = a;
  MergePartial(empty.view(), a.view(), rows, hd);
  EXPECT_EQ(a.m, copy.m);
  EXPECT_EQ(a.s, copy.s);
  EXPECT_EQ(a.o, copy.o);
  MergePartial(copy.view(), empty.view(), rows, hd);
  EXPECT_EQ(empty.m, copy.m);
  EXPECT_EQ(empty.s, copy.s);
  EXPECT_EQ(empty.o, copy.o);
  States none(1, hd);
  std::vector<float> out(hd, 7.0f);
  FinishPartial(none.view(), 1, 1, hd, out.data(), hd);
  EXPECT_EQ(out, std::vector<float>(hd, 0.0f));
}

// The whole composition: queries attend to several compressed blocks (log-count biases, no
// mask) and a causal dense window; partials merged by log-sum-exp equal softmax attention
// over [dequantized block entries ++ window keys] computed directly in double precision.
TEST(SpanAttentionTest, BlocksPlusWindowEqualPlainSoftmax) {
  std::mt19937_64 rng(5);
  ThreadPool pool(2);
  for (Codec codec : kCodecs) {
    const int hd = 64, group = 4, num_q = 5, window = 23;
    const int q_start = window - num_q;
    const float scale = 1.0f / std::sqrt(float(hd));
    std::vector<RandomBlock> blocks;
    for (int n : {64, 17, 40}) blocks.push_back(MakeBlock(codec, 32, n, hd, true, rng));
    const std::vector<float> q = Normal(int64_t{num_q} * group * hd, rng);
    const std::vector<float> wk = Normal(int64_t{window} * hd, rng);
    const std::vector<float> wv = Normal(int64_t{window} * hd, rng);

    // Direct definition.
    std::vector<double> keys, values, bias;
    for (const RandomBlock& rb : blocks) {
      const std::vector<float> k = kvcache::DecodeBlockKeys(rb.block);
      const std::vector<float> v = kvcache::DecodeBlockValues(rb.block);
      keys.insert(keys.end(), k.begin(), k.end());
      values.insert(values.end(), v.begin(), v.end());
      bias.insert(bias.end(), rb.block.log_counts.begin(), rb.block.log_counts.end());
    }
    const int num_compressed = static_cast<int>(bias.size());
    std::vector<double> expected(int64_t{num_q} * group * hd, 0.0);
    for (int j = 0; j < num_q; ++j) {
      for (int h = 0; h < group; ++h) {
        const float* qr = &q[(j * group + h) * hd];
        std::vector<double> logit;
        std::vector<const double*> vrow;
        std::vector<double> wvd(wv.begin(), wv.end());
        for (int e = 0; e < num_compressed; ++e) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += double{qr[d]} * keys[int64_t{e} * hd + d];
          logit.push_back(scale * dot + bias[e]);
          vrow.push_back(&values[int64_t{e} * hd]);
        }
        for (int t = 0; t <= q_start + j; ++t) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += double{qr[d]} * wk[t * hd + d];
          logit.push_back(scale * dot);
          vrow.push_back(&wvd[t * hd]);
        }
        double mx = -std::numeric_limits<double>::infinity(), sum = 0;
        for (double l : logit) mx = std::max(mx, l);
        for (double l : logit) sum += std::exp(l - mx);
        double* out = &expected[(j * group + h) * hd];
        for (size_t i = 0; i < logit.size(); ++i) {
          const double w = std::exp(logit[i] - mx) / sum;
          for (int d = 0; d < hd; ++d) {
            const double vv = i < static_cast<size_t>(num_compressed) ? vrow[i][d] : vrow[i][d];
            out[d] += w * vv;
          }
        }
      }
    }

    for (bool use_ref : {false, true}) {
      States spans(num_q * group, hd), dense(num_q * group, hd);
      for (const RandomBlock& rb : blocks) {
        SpanAttentionParams p{ViewOf(rb.block), q.data(), int64_t{group} * hd, num_q, group, scale, spans.view()};
        use_ref ? SpanAttentionRef(p) : SpanAttention(p, &pool);
      }
      DensePartialParams dp{q.data(), int64_t{group} * hd, num_q, group, hd, wk.data(), hd, wv.data(), hd,
                            window, q_start, scale, dense.view()};
      use_ref ? DenseAttentionPartialRef(dp) : DenseAttentionPartial(dp, &pool);
      MergePartial(dense.view(), spans.view(), num_q * group, hd);
      std::vector<float> out(expected.size());
      FinishPartial(spans.view(), num_q, group, hd, out.data(), int64_t{group} * hd);
      const double atol = use_ref ? 1e-6 : 2e-5, rtol = use_ref ? 1e-6 : 2e-4;
      for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_LE(std::abs(out[i] - expected[i]), atol + rtol * std::abs(expected[i]))
            << kvcache::CodecName(codec) << " ref=" << use_ref << " i=" << i;
      }
    }
  }
}

}  // namespace
}  // namespace kvspan::kernels
