// Test-only: random SpanAttentionBatch inputs of every codec and shape, and the contract of
// span_attention_cuda.h computed on the CPU from the references (SpanAttentionRef,
// DenseAttentionPartialRef, FinishPartial). Shared by the GPU test and the CPU-emulated one.
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_SPAN_DECODE_TEST_UTIL_H_
#define KVSPAN_KERNELS_CUDA_INTERNAL_SPAN_DECODE_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "common/float16.h"
#include "gtest/gtest.h"
#include "kernels/cuda/span_attention_cuda.h"
#include "kernels/span_attention.h"

namespace kvspan::kernels::internal {


struct Case {
  std::string name;
  std::vector<SpanCodec> codecs;  // each block draws one
  int num_seqs, num_kv_heads, group, head_dim;
  int max_blocks, max_entries, max_tail;
  int window;
  int entries_per_split;
  bool extras;  // log counts, key/value scales on some blocks
  int max_q = 1;  // queries per sequence drawn from [1, max_q] (> 1: prefill chunks)
};

inline void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

// A batch in one host arena: views hold arena offsets until Place() turns them into
// pointers into the host copy (for the reference) or the device copy (for the kernel).
class RandomBatch {
 public:
  RandomBatch(const Case& c, uint32_t seed) : c_(c), rng_(seed) {
    token_stride_ = c.head_dim + 3;  // strided, not packed
    capacity_ = std::max(c.max_tail, c.max_q) + 2;
    head_stride_ = capacity_ * token_stride_;
    indptr_.push_back(0);
    for (int s = 0; s < c.num_seqs; ++s) {
      num_q_.push_back(std::uniform_int_distribution<int>(1, c.max_q)(rng_));
      // Sequence 0 has no tail (it attends to its blocks only); the others hold their queries.
      tail_len_.push_back(s == 0 ? 0 : std::uniform_int_distribution<int>(num_q_[s], std::max(num_q_[s], c.max_tail))(rng_));
      int32_t longest = 0;
      for (int g = 0; g < c.num_kv_heads; ++g) {
        const int num_blocks = std::uniform_int_distribution<int>(0, c.max_blocks)(rng_);
        int32_t position = 0;
        for (int i = 0; i < num_blocks; ++i) AddBlock(&position);
        indptr_.push_back(static_cast<int32_t>(offsets_.size()));
        longest = std::max(longest, position);
      }
      // Every head's spans end before the tail; the query is the tail's last token.
      // The tail's last num_q tokens are the queries; the first of them is at this position.
      query_position_.push_back(longest + std::max(0, tail_len_[s] - num_q_[s]));
      const int64_t tail_floats = int64_t{c.num_kv_heads} * head_stride_;
      tail_offset_.push_back(AddFloats(tail_floats, 1.0f));
      tail_v_offset_.push_back(AddFloats(tail_floats, 1.0f));
    }
    int64_t total_q = 0;
    for (int n : num_q_) total_q += n;
    // With extras, q is strided (as read in place from a fused qkv matrix).
    packed_q_floats_ = int64_t{c.num_kv_heads} * c.group * c.head_dim;
    q_row_stride_ = packed_q_floats_ + (c.extras ? 5 : 0);
    num_out_floats_ = total_q * packed_q_floats_;
    q_.resize(total_q * q_row_stride_);
    for (float& x : q_) x = normal_(rng_);
  }

  const Case& spec() const { return c_; }
  const std::vector<uint8_t>& arena() const { return arena_; }
  const std::vector<float>& q() const { return q_; }
  const std::vector<int32_t>& num_q() const { return num_q_; }
  int64_t num_out_floats() const { return num_out_floats_; }  // the packed output's size

  // The views and tail pointers with the arena at `base`.
  void Place(const uint8_t* base, std::vector<SpanBlockView>* views, std::vector<const float*>* tail_k,
             std::vector<const float*>* tail_v) const {
    views->clear();
    for (const SpanBlockView& o : offsets_) {
      SpanBlockView v = o;
      v.key_data = At(base, o.key_data);
      v.value_data = At(base, o.value_data);
      v.key_params = At(base, o.key_params);
      v.value_params = At(base, o.value_params);
      v.log_counts = At(base, o.log_counts);
      v.key_scales = At(base, o.key_scales);
      v.value_scales = At(base, o.value_scales);
      v.positions = At(base, o.positions);
      views->push_back(v);
    }
    tail_k->clear();
    tail_v->clear();
    for (size_t s = 0; s < tail_offset_.size(); ++s) {
      tail_k->push_back(reinterpret_cast<const float*>(base + tail_offset_[s]));
      tail_v->push_back(reinterpret_cast<const float*>(base + tail_v_offset_[s]));
    }
  }

  SpanAttentionBatch Batch(const std::vector<SpanBlockView>& views, const std::vector<const float*>& tail_k,
                        const std::vector<const float*>& tail_v, const float* q, float* out) const {
    SpanAttentionBatch b;
    b.num_seqs = c_.num_seqs;
    b.num_kv_heads = c_.num_kv_heads;
    b.group = c_.group;
    b.head_dim = c_.head_dim;
    b.scale = 1.0f / std::sqrt(static_cast<float>(c_.head_dim));
    b.window = c_.window;
    b.q = q;
    b.q_row_stride = q_row_stride_;
    b.out = out;
    b.block_indptr = indptr_.data();
    b.blocks = views.data();
    b.tail_k = tail_k.data();
    b.tail_v = tail_v.data();
    b.tail_len = tail_len_.data();
    b.num_q = num_q_.data();
    b.tail_head_stride = head_stride_;
    b.tail_token_stride = token_stride_;
    b.query_position = query_position_.data();
    return b;
  }

 private:
  // Appends `bytes` (aligned to 16) and returns its offset.
  int64_t Add(const void* data, int64_t bytes) {
    const int64_t offset = (static_cast<int64_t>(arena_.size()) + 15) / 16 * 16;
    arena_.resize(offset + bytes);
    std::memcpy(arena_.data() + offset, data, bytes);
    return offset;
  }
  int64_t AddFloats(int64_t n, float sigma) {
    std::vector<float> x(n);
    for (float& f : x) f = sigma * normal_(rng_);
    return Add(x.data(), n * 4);
  }
  // An offset stored in a pointer field, + 1 so that offset 0 is not null; At() undoes it.
  template <typename T>
  static const T* Offset(int64_t offset) {
    return reinterpret_cast<const T*>(static_cast<uintptr_t>(offset) + 1);
  }
  template <typename T>
  static const T* At(const uint8_t* base, const T* offset) {
    if (offset == nullptr) return nullptr;
    return reinterpret_cast<const T*>(base + reinterpret_cast<uintptr_t>(offset) - 1);
  }

  void AddBlock(int32_t* position) {
    const int hd = c_.head_dim;
    SpanBlockView v;
    v.codec = c_.codecs[std::uniform_int_distribution<size_t>(0, c_.codecs.size() - 1)(rng_)];
    v.head_dim = hd;
    v.num_entries = std::uniform_int_distribution<int>(0, c_.max_entries)(rng_);
    const int n = v.num_entries;
    const int bits = SpanCodecBits(v.codec);
    const int64_t row_bytes = (int64_t{hd} * bits + 7) / 8;
    std::vector<uint8_t> keys(std::max<int64_t>(1, n * row_bytes)), values(keys.size());
    if (bits == 16) {
      for (int64_t i = 0; i < n * int64_t{hd}; ++i) {
        const float k = normal_(rng_), x = normal_(rng_);
        const uint16_t kb = v.codec == SpanCodec::kBF16 ? FloatToBf16(k) : FloatToHalf(k);
        const uint16_t xb = v.codec == SpanCodec::kBF16 ? FloatToBf16(x) : FloatToHalf(x);
        std::memcpy(&keys[2 * i], &kb, 2);
        std::memcpy(&values[2 * i], &xb, 2);
      }
    } else {
      std::uniform_int_distribution<int> byte(0, 255);
      for (auto& b : keys) b = static_cast<uint8_t>(byte(rng_));
      for (auto& b : values) b = static_cast<uint8_t>(byte(rng_));
      const int group_sizes[] = {1, 8, 32, 64};
      v.group_size = group_sizes[std::uniform_int_distribution<int>(0, 3)(rng_)];
      const float top = static_cast<float>((1 << bits) - 1);
      std::uniform_real_distribution<float> unit(0.2f, 1.0f);
      auto params = [&](int64_t count) {
        std::vector<uint16_t> p(2 * count);
        for (int64_t i = 0; i < count; ++i) {
          p[2 * i] = FloatToHalf(2.0f * unit(rng_) / top);  // codes span about [-1, 1] + zero
          p[2 * i + 1] = FloatToHalf(-1.0f + 0.3f * normal_(rng_));
        }
        return p;
      };
      const int64_t key_groups = (int64_t{n} + v.group_size - 1) / v.group_size;
      const int64_t value_groups = (int64_t{hd} + v.group_size - 1) / v.group_size;
      const auto kp = params(std::max<int64_t>(1, key_groups * hd));
      const auto vp = params(std::max<int64_t>(1, n * value_groups));
      v.key_params = Offset<uint16_t>(Add(kp.data(), kp.size() * 2));
      v.value_params = Offset<uint16_t>(Add(vp.data(), vp.size() * 2));
    }
    v.key_data = Offset<uint8_t>(Add(keys.data(), keys.size()));
    v.value_data = Offset<uint8_t>(Add(values.data(), values.size()));
    std::vector<int32_t> positions(std::max(1, n));
    for (int e = 0; e < n; ++e) {
      positions[e] = *position;
      *position += 1 + std::uniform_int_distribution<int>(0, 2)(rng_);  // evicted gaps
    }
    v.positions = Offset<int32_t>(Add(positions.data(), positions.size() * 4));
    if (c_.extras) {
      std::uniform_real_distribution<float> factor(0.5f, 1.5f);
      auto floats = [&](auto gen) {
        std::vector<float> x(std::max(1, n));
        for (float& f : x) f = gen();
        return Offset<float>(Add(x.data(), x.size() * 4));
      };
      std::uniform_int_distribution<int> coin(0, 1);
      if (coin(rng_)) v.log_counts = floats([&] { return std::log(1.0f + std::uniform_int_distribution<int>(0, 3)(rng_)); });
      if (coin(rng_)) v.key_scales = floats([&] { return factor(rng_); });
      if (coin(rng_)) v.value_scales = floats([&] { return factor(rng_); });
    }
    offsets_.push_back(v);
  }

  Case c_;
  std::mt19937 rng_;
  std::normal_distribution<float> normal_{0.0f, 1.0f};
  std::vector<uint8_t> arena_;
  std::vector<float> q_;
  std::vector<SpanBlockView> offsets_;
  std::vector<int32_t> indptr_, num_q_, tail_len_, query_position_;
  std::vector<int64_t> tail_offset_, tail_v_offset_;
  int64_t token_stride_ = 0, capacity_ = 0, head_stride_ = 0;
  int64_t packed_q_floats_ = 0, q_row_stride_ = 0, num_out_floats_ = 0;
};

// The contract, on the host arena.
inline std::vector<float> Reference(const RandomBatch& rb) {
  const Case& c = rb.spec();
  std::vector<SpanBlockView> views;
  std::vector<const float*> tail_k, tail_v;
  rb.Place(rb.arena().data(), &views, &tail_k, &tail_v);
  const SpanAttentionBatch b = rb.Batch(views, tail_k, tail_v, rb.q().data(), nullptr);
  const int hd = c.head_dim;
  const int64_t row_stride = int64_t{c.num_kv_heads} * c.group * hd;  // floats between output rows
  std::vector<float> out(rb.num_out_floats());
  int64_t q_row = 0;
  for (int seq = 0; seq < c.num_seqs; ++seq) {
    const int n = b.num_q[seq];
    std::vector<float> m(n * c.group), s(n * c.group), o(int64_t{n} * c.group * hd);
    for (int g = 0; g < c.num_kv_heads; ++g) {
      const int sh = seq * c.num_kv_heads + g;
      const int64_t base = q_row * row_stride + int64_t{g} * c.group * hd;
      const float* q = rb.q().data() + q_row * b.q_row_stride + int64_t{g} * c.group * hd;
      PartialState state{m.data(), s.data(), o.data()};
      InitPartial(state, n * c.group, hd);
      for (int i = b.block_indptr[sh]; i < b.block_indptr[sh + 1]; ++i) {
        SpanAttentionParams p;
        p.block = views[i];
        p.q = q;
        p.q_row_stride = b.q_row_stride;
        p.num_q = n;
        p.group = c.group;
        p.scale = b.scale;
        p.state = state;
        p.window = c.window;
        p.first_query_position = b.query_position[seq];
        p.key_dot = SpanKeyDot::kFloat;
        SpanAttentionRef(p);
      }
      if (b.tail_len[seq] > 0) {
        DensePartialParams p;
        p.q = q;
        p.q_row_stride = b.q_row_stride;
        p.num_q = n;
        p.group = c.group;
        p.head_dim = hd;
        p.k = tail_k[seq] + g * b.tail_head_stride;
        p.k_token_stride = b.tail_token_stride;
        p.v = tail_v[seq] + g * b.tail_head_stride;
        p.v_token_stride = b.tail_token_stride;
        p.num_keys = b.tail_len[seq];
        p.q_start = b.tail_len[seq] - n;
        p.scale = b.scale;
        p.state = state;
        p.window = c.window;
        DenseAttentionPartialRef(p);
      }
      FinishPartial(state, n, c.group, hd, out.data() + base, row_stride);
    }
    q_row += n;
  }
  return out;
}

inline const std::vector<SpanCodec> kAllSpanCodecs = {SpanCodec::kBF16, SpanCodec::kFP16, SpanCodec::kInt8, SpanCodec::kInt4,
                                     SpanCodec::kInt2};


// Asserts got == ref within the kernels' stated tolerance: fp32 logits, expf and merges
// against double give errors ~1e-6 of the values' magnitude; the bound leaves two orders of
// margin, and a wrong dequantization, mask or merge is O(1). NaN (the poison of an
// unwritten element) fails it.
inline void ExpectWithinTolerance(const std::vector<float>& got, const std::vector<float>& ref,
                                  const std::string& where) {
  ASSERT_EQ(got.size(), ref.size());
  float max_ref = 0.0f;
  for (float x : ref) max_ref = std::max(max_ref, std::fabs(x));
  const float atol = 1e-4f * std::max(1.0f, max_ref), rtol = 1e-3f;
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_LE(std::fabs(got[i] - ref[i]), atol + rtol * std::fabs(ref[i]))
        << where << " element " << i << " got " << got[i] << " ref " << ref[i];
  }
}

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_SPAN_DECODE_TEST_UTIL_H_
