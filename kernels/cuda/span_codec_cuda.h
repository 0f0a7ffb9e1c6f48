// Span compression on the GPU, the codec stage: a span's dense fp32 keys and values, every
// (layer, KV head) block of it in one launch, encoded into kvcache's entry-block layout
// (kvcache/entry_block.h: bf16, fp16, or KIVI-style asymmetric int8/int4/int2 with keys
// grouped per channel over G entries and values per token over G channels, fp16 scale and
// zero per group) bit for bit as kvcache::EncodeBlock encodes them, so a codec-only policy
// compresses on the device what the CPU would have, without a host round trip of the K/V.
// The entries may be a gathered subset of the span's tokens (token_index: the tokens a
// sinks / window policy keeps, the same list for every block), so such a policy does too.
//
// Contract: for block b = layer * num_kv_heads + head, EncodeBlock({codec, group_size},
// {the block's n entries: tokens token_index[0..n), or 0..n-1}) gives exactly key_data,
// value_data, key_params and value_params at b's slots below; tested against it
// (span_codec_cuda_test.cc, on the GPU and in the CPU emulator). This header never
// includes CUDA headers (STYLE.md).
#ifndef KVSPAN_KERNELS_CUDA_SPAN_CODEC_CUDA_H_
#define KVSPAN_KERNELS_CUDA_SPAN_CODEC_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/span_attention.h"

namespace kvspan::kernels {

struct SpanCodecCudaParams {
  SpanCodec codec = SpanCodec::kBF16;
  int group_size = 32;  // quantized codecs: [1, 65536]; ignored for bf16/fp16
  int num_layers = 0;   // blocks = num_layers * num_kv_heads, each of num_entries entries
  int num_kv_heads = 0;
  int num_entries = 0;  // n >= 1
  int head_dim = 0;     // D in [1, 1024]
  // Device fp32 input: token t, channel d of block (l, h) at
  // keys[l * layer_stride + h * head_stride + t * token_stride + d]; values alike.
  const float* keys = nullptr;
  const float* values = nullptr;
  int64_t layer_stride = 0;
  int64_t head_stride = 0;
  int64_t token_stride = 0;  // >= D
  // Device [n]: entry e of every block is token token_index[e] (any tokens the strides
  // address, in the order the entries are to have; not checked). Null: entry e is token e.
  const int32_t* token_index = nullptr;
  // Device outputs, block b's arrays at b * (their per-block size):
  uint8_t* key_data = nullptr;     // [blocks][n][R], R = ceil(D * bits / 8)
  uint8_t* value_data = nullptr;   // [blocks][n][R]
  uint16_t* key_params = nullptr;  // quantized: [blocks][ceil(n / G)][D][2] fp16 (scale, zero)
  uint16_t* value_params = nullptr;  // quantized: [blocks][n][ceil(D / G)][2]
};

// Bytes of one block's key (or value) codes, and fp16 values of one block's key and value
// params (0 for bf16/fp16): the per-block sizes of the outputs above.
int64_t SpanCodecRowBytes(SpanCodec codec, int head_dim);
int64_t SpanCodecKeyParamCount(SpanCodec codec, int group_size, int num_entries, int head_dim);
int64_t SpanCodecValueParamCount(SpanCodec codec, int group_size, int num_entries, int head_dim);

// Encodes every block and waits for it (the check of the inputs' values needs the device's
// answer): InvalidArgument for shapes out of range or null pointers, and, as EncodeBlock,
// for a non-finite key or value or (fp16 and quantized codecs) |x| > 65504; Unavailable
// without a device; Internal for a CUDA error. `stream` is a cudaStream_t (null = default).
absl::Status EncodeSpanCuda(const SpanCodecCudaParams& p, void* stream);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_CUDA_SPAN_CODEC_CUDA_H_
