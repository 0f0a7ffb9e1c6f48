// The kernels of EncodeSpanCuda (span_codec_cuda.h), against cuda_compat.h (GPU and CPU
// emulator). The quantizer's arithmetic is kvcache/internal/quantize.cc's, step for step:
// fp16 zero rounded down to <= min, fp16 scale rounded up to >= (max - zero) / (levels - 1)
// in double, codes round-half-even((x - zero) / scale) in double, clamped.
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_SPAN_CODEC_KERNELS_CUH_
#define KVSPAN_KERNELS_CUDA_INTERNAL_SPAN_CODEC_KERNELS_CUH_

#include <cstdint>

#include "kernels/cuda/internal/cuda_compat.h"
#include "kernels/cuda/span_codec_cuda.h"

namespace kvspan::kernels::internal {

inline constexpr int kCodecThreads = 256;

struct SpanCodecArgs {
  SpanCodecCudaParams p;
  int bits;
  int64_t row_bytes;
  int64_t key_param_count;    // per block, fp16 values
  int64_t value_param_count;  // per block
  int* error;                 // device: set to 1 for a value EncodeBlock rejects
};

KVSPAN_DEVICE uint16_t HalfNextDownBits(uint16_t h) {
  if (h == 0x0000u) return 0x8001u;
  if (h & 0x8000u) return static_cast<uint16_t>(h + 1);
  return static_cast<uint16_t>(h - 1);
}
KVSPAN_DEVICE uint16_t HalfNextUpBits(uint16_t h) {
  if (h == 0x8000u) return 0x0001u;
  if (h & 0x8000u) return static_cast<uint16_t>(h - 1);
  return static_cast<uint16_t>(h + 1);
}

// ChooseGroupParams: writes (scale, zero) fp16 bits.
KVSPAN_DEVICE void GroupParams(float lo, float hi, int levels, uint16_t* out) {
  uint16_t zero = FloatToHalfBits(lo);
  if (Fp16BitsToFloat(zero) > lo) zero = HalfNextDownBits(zero);
  if (zero == 0x8000u) zero = 0;  // canonical +0
  const double range = static_cast<double>(hi) - Fp16BitsToFloat(zero);
  const double wanted = range / (levels - 1);
  uint16_t scale = FloatToHalfBits(static_cast<float>(wanted));
  if (static_cast<double>(Fp16BitsToFloat(scale)) < wanted) scale = HalfNextUpBits(scale);
  out[0] = scale;
  out[1] = zero;
}

// QuantizeValue.
KVSPAN_DEVICE uint32_t QuantizeCode(float x, const uint16_t* params, int levels) {
  const double scale = Fp16BitsToFloat(params[0]);
  if (scale == 0.0) return 0;
  const double q = RoundHalfEven((static_cast<double>(x) - Fp16BitsToFloat(params[1])) / scale);
  return static_cast<uint32_t>(q < 0.0 ? 0.0 : (q > levels - 1 ? static_cast<double>(levels - 1) : q));
}

// A value EncodeBlock rejects: non-finite, or beyond fp16's range for fp16 / quantized codecs.
KVSPAN_DEVICE bool Rejected(float x, bool fp16_range) {
  return !IsFiniteFloat(x) || (fp16_range && (x > 65504.0f || x < -65504.0f));
}

KVSPAN_DEVICE const float* BlockRows(const SpanCodecCudaParams& p, const float* base, int64_t block) {
  return base + (block / p.num_kv_heads) * p.layer_stride + (block % p.num_kv_heads) * p.head_stride;
}

// The row of entry e in a block's rows (BlockRows): token token_index[e], or e.
KVSPAN_DEVICE int64_t EntryRow(const SpanCodecCudaParams& p, int e) {
  return (p.token_index != nullptr ? p.token_index[e] : e) * p.token_stride;
}

KVSPAN_HOST_DEVICE int64_t SpanCodecBlocks(const SpanCodecCudaParams& p) { return int64_t{p.num_layers} * p.num_kv_heads; }

// Key params: one thread per (block, key group, channel).
inline LaunchShape KeyParamsShape(const SpanCodecArgs& a) {
  const int64_t n = SpanCodecBlocks(a.p) * (a.key_param_count / 2);
  return {dim3(static_cast<unsigned>((n + kCodecThreads - 1) / kCodecThreads)), dim3(kCodecThreads)};
}
KVSPAN_GLOBAL(kCodecThreads) KeyParamsKernel(SpanCodecArgs a) {
  const SpanCodecCudaParams& p = a.p;
  const int64_t per_block = a.key_param_count / 2;
  const int64_t i = int64_t{blockIdx.x} * kCodecThreads + threadIdx.x;
  if (i >= SpanCodecBlocks(p) * per_block) return;
  const int64_t block = i / per_block;
  const int g = static_cast<int>((i % per_block) / p.head_dim);
  const int d = static_cast<int>(i % p.head_dim);
  const float* rows = BlockRows(p, p.keys, block);
  const int e_end = (g + 1) * p.group_size < p.num_entries ? (g + 1) * p.group_size : p.num_entries;
  float lo = INFINITY, hi = -INFINITY;
  bool bad = false;
  for (int e = g * p.group_size; e < e_end; ++e) {
    const float x = rows[EntryRow(p, e) + d];
    bad |= Rejected(x, true);
    lo = fminf(lo, x);
    hi = fmaxf(hi, x);
  }
  if (bad) {
    *a.error = 1;
    return;
  }
  GroupParams(lo, hi, 1 << a.bits, p.key_params + block * a.key_param_count + (int64_t{g} * p.head_dim + d) * 2);
}

// Value params: one thread per (block, entry, channel group).
inline LaunchShape ValueParamsShape(const SpanCodecArgs& a) {
  const int64_t n = SpanCodecBlocks(a.p) * (a.value_param_count / 2);
  return {dim3(static_cast<unsigned>((n + kCodecThreads - 1) / kCodecThreads)), dim3(kCodecThreads)};
}
KVSPAN_GLOBAL(kCodecThreads) ValueParamsKernel(SpanCodecArgs a) {
  const SpanCodecCudaParams& p = a.p;
  const int groups = (p.head_dim + p.group_size - 1) / p.group_size;
  const int64_t per_block = a.value_param_count / 2;  // n * groups
  const int64_t i = int64_t{blockIdx.x} * kCodecThreads + threadIdx.x;
  if (i >= SpanCodecBlocks(p) * per_block) return;
  const int64_t block = i / per_block;
  const int e = static_cast<int>((i % per_block) / groups);
  const int g = static_cast<int>(i % groups);
  const float* row = BlockRows(p, p.values, block) + EntryRow(p, e);
  const int d_end = (g + 1) * p.group_size < p.head_dim ? (g + 1) * p.group_size : p.head_dim;
  float lo = INFINITY, hi = -INFINITY;
  bool bad = false;
  for (int d = g * p.group_size; d < d_end; ++d) {
    bad |= Rejected(row[d], true);
    lo = fminf(lo, row[d]);
    hi = fmaxf(hi, row[d]);
  }
  if (bad) {
    *a.error = 1;
    return;
  }
  GroupParams(lo, hi, 1 << a.bits, p.value_params + block * a.value_param_count + (int64_t{e} * groups + g) * 2);
}

// Codes: one thread per (block, entry, byte of the row) for keys, and again for values
// (blockIdx.y: 0 keys, 1 values). 16-bit codecs store each channel's bits; quantized ones
// pack 8 / B codes per byte, least significant bits first, unused high bits zero.
inline LaunchShape CodesShape(const SpanCodecArgs& a) {
  const int64_t n = SpanCodecBlocks(a.p) * a.p.num_entries * a.row_bytes;
  return {dim3(static_cast<unsigned>((n + kCodecThreads - 1) / kCodecThreads), 2), dim3(kCodecThreads)};
}
KVSPAN_GLOBAL(kCodecThreads) CodesKernel(SpanCodecArgs a) {
  const SpanCodecCudaParams& p = a.p;
  const bool is_key = blockIdx.y == 0;
  const int64_t per_block = int64_t{p.num_entries} * a.row_bytes;
  const int64_t i = int64_t{blockIdx.x} * kCodecThreads + threadIdx.x;
  if (i >= SpanCodecBlocks(p) * per_block) return;
  const int64_t block = i / per_block;
  const int e = static_cast<int>((i % per_block) / a.row_bytes);
  const int byte = static_cast<int>(i % a.row_bytes);
  const float* row = BlockRows(p, is_key ? p.keys : p.values, block) + EntryRow(p, e);
  uint8_t* out = (is_key ? p.key_data : p.value_data) + block * per_block + int64_t{e} * a.row_bytes + byte;
  if (a.bits == 16) {
    const int d = byte / 2;
    const float x = row[d];
    if (Rejected(x, p.codec == SpanCodec::kFP16)) {
      *a.error = 1;
      return;
    }
    uint16_t h;
    if (p.codec == SpanCodec::kFP16) {
      h = FloatToHalfBits(x);
    } else {
      const uint32_t bits = FloatBits(x);
      h = static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    }
    *out = static_cast<uint8_t>(byte % 2 == 0 ? h & 0xff : h >> 8);
    return;
  }
  const int per_byte = 8 / a.bits;
  const int levels = 1 << a.bits;
  const int groups = (p.head_dim + p.group_size - 1) / p.group_size;
  uint32_t packed = 0;
  for (int k = 0; k < per_byte; ++k) {
    const int d = byte * per_byte + k;
    if (d >= p.head_dim) break;
    const uint16_t* params =
        is_key ? p.key_params + block * a.key_param_count + (int64_t{e / p.group_size} * p.head_dim + d) * 2
               : p.value_params + block * a.value_param_count + (int64_t{e} * groups + d / p.group_size) * 2;
    packed |= QuantizeCode(row[d], params, levels) << (k * a.bits);
  }
  *out = static_cast<uint8_t>(packed);
}

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_SPAN_CODEC_KERNELS_CUH_
