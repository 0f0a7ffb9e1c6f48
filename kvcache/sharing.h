// Cross-layer sharing of one span's KV (the optional third stage of a policy,
// kvcache/README.md): MiniCache and PoD, producing the shared blocks of
// kvcache/entry_block.h ("Shared blocks") from the span's DENSE fp32 rows.
//
// MiniCache — Liu et al., "MiniCache: KV Cache Compression in Depth Dimension for Large
// Language Models", arXiv 2405.14366. From layer f = ceil(from * L) on, layers are paired
// (f, f+1), (f+2, f+3), ... (a last unpaired layer stays plain). Per KV head of a pair and
// token t, keys and values separately: the two layers' directions are merged by SLERP,
//   e = SLERP(x_l / |x_l|, x_{l+1} / |x_{l+1}|, t_interp),
// layer l stores |x_l| * e (an ordinary block 0) and layer l+1 a shared block 0
// (kKeysAndValues, source l) with per-token scales |x_{l+1}| / |x_l| (fp16), so it reads
// |x_{l+1}| * e: magnitudes are kept per token and per layer. Retained tokens — the
// ceil(retain * S) tokens with the LARGEST angle between the two layers' key directions
// (ties: the earlier token), plus every token whose merge is ill-defined (a zero norm, a
// norm ratio above the fp16 range, or nearly opposite directions) — are not merged: they
// go, unchanged, in block 1 of both layers (present only when non-empty).
//
// PoD (Proximal tokens over Distant tokens) — Ma et al., "Compressing KV Cache for
// Long-Context LLM Inference with Inter-Layer Attention Similarity", arXiv 2412.02252.
// From layer f = ceil(from * L) on, layers form groups of `group` consecutive layers (a
// last group of one layer stays plain). Proximal tokens — sinks (sequence positions <
// sinks) and the span's last `window` tokens, the rule of reducers/sinks_window.h — stay
// per layer; the distant tokens of an upper layer of a group read the LOWEST layer's
// keys (shared block 0, kKeys, own values, no scales). Block 0 = distant tokens (owned in
// the lowest layer, shared above), block 1 = proximal tokens (owned, present only when
// non-empty). Attention over the two blocks is the paper's log-sum-exp merge of the two
// partial attentions (kernels/span_attention.h). The paper post-trains the model for
// shared keys; on a checkpoint not trained for it this is the mechanism only, and its
// training-free quality is what it is (docs/quality.md).
//
// Both: layers outside the sharing range, and every layer when nothing is shared, get one
// plain block (as the codec-only policy). Log counts are 0 (every token kept once). Only
// the span's own tokens are read (causality). Pure and thread-safe.
#ifndef KVSPAN_KVCACHE_SHARING_H_
#define KVSPAN_KVCACHE_SHARING_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvcache/entry_block.h"
#include "kvcache/span.h"

namespace kvspan::kvcache {

struct MiniCacheOptions {
  double from = 0.5;     // fraction of depth where pairing starts, [0, 1]
  double t = 0.5;        // SLERP interpolation: 0 = layer l's direction, 1 = layer l+1's
  double retain = 0.05;  // fraction of tokens kept unmerged (largest key angles), [0, 1]
};

struct PodOptions {
  double from = 0.0;  // fraction of depth where grouping starts, [0, 1]
  int group = 2;      // layers per group, >= 1 (1: nothing shared)
  int sinks = 4;      // proximal: sequence positions < sinks
  int window = 16;    // proximal: the last `window` tokens of the span
};

// The first layer of the sharing range: ceil(from * num_layers), clamped to num_layers.
int FirstSharingLayer(double from, int num_layers);

// SLERP of two unit vectors a and b (size n) with parameter t, in double precision: when
// the angle is below 1e-6 rad, the normalized linear interpolation. REQUIRES: a, b unit,
// not (nearly) opposite.
std::vector<double> Slerp(absl::Span<const double> a, absl::Span<const double> b, double t);

// The heads ([num_layers * num_kv_heads], layer-major) of a span compressed with the
// codec `codec` and MiniCache / PoD sharing; every other header field is the caller's.
// InvalidArgument for options out of range, null K/V, bad strides, or values the codec
// rejects (EncodeBlock), including a merged or scaled value outside the codec's range.
absl::StatusOr<std::vector<HeadEntries>> MiniCacheHeads(const MiniCacheOptions& options,
                                                        const CodecSpec& codec,
                                                        const SpanHeader& header,
                                                        const DenseKvView& kv);
absl::StatusOr<std::vector<HeadEntries>> PodHeads(const PodOptions& options,
                                                  const CodecSpec& codec,
                                                  const SpanHeader& header,
                                                  const DenseKvView& kv);

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_SHARING_H_
