#include "kvcache/sharing.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/float16.h"
#include "common/status_macros.h"
#include "kvcache/internal/span_checks.h"
#include "kvcache/reducers/entries.h"
#include "kvcache/reducers/sinks_window.h"

namespace kvspan::kvcache {
namespace {

using reducers::ReducedEntries;

// Below this angle (rad) SLERP is replaced by the normalized linear interpolation.
constexpr double kSmallAngle = 1e-6;
// A token whose two directions have cos below -1 + this is "nearly opposite": SLERP has no
// unique path there, so MiniCache retains it.
constexpr double kOppositeSlack = 1e-6;
constexpr uint16_t kHalfOne = 0x3C00;  // fp16 1.0

// Row t of (layer, kv_head), keys or values, widened to double.
std::vector<double> Row(const DenseKvView& kv, const float* base, int layer, int kv_head, int t,
                        int head_dim) {
  const float* x = base + layer * kv.layer_stride + kv_head * kv.head_stride + t * kv.token_stride;
  return std::vector<double>(x, x + head_dim);
}

double Norm(const std::vector<double>& x) {
  return std::sqrt(std::inner_product(x.begin(), x.end(), x.begin(), 0.0));
}

// The tokens [0, S) of (layer, kv_head) at indices `tokens`, as entries (log count 0).
ReducedEntries Gather(const SpanHeader& header, const DenseKvView& kv, int layer, int kv_head,
                      const std::vector<int>& tokens) {
  ReducedEntries out;
  out.head_dim = header.geometry.head_dim;
  const int64_t base = layer * kv.layer_stride + kv_head * kv.head_stride;
  for (int t : tokens) {
    out.Append(header.first_position + t, 0.0f, kv.keys + base + t * kv.token_stride,
               kv.values + base + t * kv.token_stride);
  }
  return out;
}

// One plain block per head of `layer`: every token, in `codec` (the codec-only policy).
absl::Status PlainLayer(const CodecSpec& codec, const SpanHeader& header, const DenseKvView& kv,
                        int layer, std::vector<HeadEntries>* heads) {
  const SpanGeometry& g = header.geometry;
  std::vector<int> all(g.span_tokens);
  std::iota(all.begin(), all.end(), 0);
  for (int h = 0; h < g.num_kv_heads; ++h) {
    const ReducedEntries e = Gather(header, kv, layer, h, all);
    ASSIGN_OR_RETURN(EntryBlock block, EncodeBlock(codec, e.view()));
    (*heads)[static_cast<size_t>(layer) * g.num_kv_heads + h].blocks = {std::move(block)};
  }
  return absl::OkStatus();
}

// A shared block reading `source` (block b of `source_layer`): the source's entries, no
// own codes; the caller adds own values (kKeys) or scales (kKeysAndValues).
EntryBlock SharedOf(const EntryBlock& source, int source_layer, BlockShares shares) {
  EntryBlock b;
  b.codec = source.codec;
  b.group_size = source.group_size;
  b.head_dim = source.head_dim;
  b.positions = source.positions;
  b.log_counts = source.log_counts;
  b.source_layer = source_layer;
  b.shares = shares;
  return b;
}

// fp16 scales, or empty when all are 1 (the canonical form, entry_block.h).
std::vector<uint16_t> CanonicalScales(const std::vector<double>& ratios) {
  std::vector<uint16_t> out(ratios.size());
  bool all_ones = true;
  for (size_t i = 0; i < ratios.size(); ++i) {
    out[i] = FloatToHalf(static_cast<float>(ratios[i]));
    all_ones &= out[i] == kHalfOne;
  }
  if (all_ones) out.clear();
  return out;
}

// MiniCache for the pair (l, l+1), KV head h.
absl::Status MergePair(const MiniCacheOptions& o, const CodecSpec& codec, const SpanHeader& header,
                       const DenseKvView& kv, int l, int h, std::vector<HeadEntries>* heads) {
  const SpanGeometry& g = header.geometry;
  const int S = g.span_tokens, D = g.head_dim;
  std::vector<double> angle(S);
  std::vector<char> forced(S, 0);
  struct Merged {
    std::vector<float> key0, value0;  // |x_l| * e
    double key_ratio = 0, value_ratio = 0;
  };
  std::vector<Merged> merged(S);
  for (int t = 0; t < S; ++t) {
    for (int kind = 0; kind < 2; ++kind) {
      const float* base = kind == 0 ? kv.keys : kv.values;
      const std::vector<double> x0 = Row(kv, base, l, h, t, D), x1 = Row(kv, base, l + 1, h, t, D);
      const double n0 = Norm(x0), n1 = Norm(x1);
      const double ratio = n1 / n0;
      if (n0 == 0.0 || n1 == 0.0 || !(ratio <= kFp16Max)) {
        forced[t] = 1;
        continue;
      }
      std::vector<double> a(D), b(D);
      double cos = 0.0;
      for (int d = 0; d < D; ++d) {
        a[d] = x0[d] / n0;
        b[d] = x1[d] / n1;
        cos += a[d] * b[d];
      }
      cos = std::clamp(cos, -1.0, 1.0);
      if (kind == 0) angle[t] = std::acos(cos);
      if (cos < -1.0 + kOppositeSlack) {
        forced[t] = 1;
        continue;
      }
      const std::vector<double> e = Slerp(a, b, o.t);
      std::vector<float>& out = kind == 0 ? merged[t].key0 : merged[t].value0;
      out.resize(D);
      for (int d = 0; d < D; ++d) out[d] = static_cast<float>(n0 * e[d]);
      (kind == 0 ? merged[t].key_ratio : merged[t].value_ratio) = ratio;
    }
  }
  // Retained: the forced tokens plus the ceil(retain * S) largest key angles among the rest.
  std::vector<int> order;
  for (int t = 0; t < S; ++t) {
    if (!forced[t]) order.push_back(t);
  }
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return angle[a] > angle[b]; });
  const int num_retain = std::min<int>(order.size(), static_cast<int>(std::ceil(o.retain * S)));
  std::vector<char> retained = forced;
  for (int i = 0; i < num_retain; ++i) retained[order[i]] = 1;

  std::vector<int> kept;
  ReducedEntries merged_rows;
  merged_rows.head_dim = D;
  std::vector<double> key_ratios, value_ratios;
  for (int t = 0; t < S; ++t) {
    if (retained[t]) {
      kept.push_back(t);
      continue;
    }
    merged_rows.Append(header.first_position + t, 0.0f, merged[t].key0.data(),
                       merged[t].value0.data());
    key_ratios.push_back(merged[t].key_ratio);
    value_ratios.push_back(merged[t].value_ratio);
  }
  HeadEntries& lower = (*heads)[static_cast<size_t>(l) * g.num_kv_heads + h];
  HeadEntries& upper = (*heads)[static_cast<size_t>(l + 1) * g.num_kv_heads + h];
  ASSIGN_OR_RETURN(EntryBlock block0, EncodeBlock(codec, merged_rows.view()));
  EntryBlock shared = SharedOf(block0, l, BlockShares::kKeysAndValues);
  shared.key_scales = CanonicalScales(key_ratios);
  shared.value_scales = CanonicalScales(value_ratios);
  lower.blocks = {std::move(block0)};
  upper.blocks = {std::move(shared)};
  if (!kept.empty()) {
    for (int layer : {l, l + 1}) {
      const ReducedEntries e = Gather(header, kv, layer, h, kept);
      ASSIGN_OR_RETURN(EntryBlock block1, EncodeBlock(codec, e.view()));
      (layer == l ? lower : upper).blocks.push_back(std::move(block1));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckRatio(double x, const char* name) {
  if (!(x >= 0.0 && x <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("sharing: ", name, " = ", x, " not in [0, 1]"));
  }
  return absl::OkStatus();
}

}  // namespace

int FirstSharingLayer(double from, int num_layers) {
  return std::min(num_layers, static_cast<int>(std::ceil(from * num_layers)));
}

std::vector<double> Slerp(absl::Span<const double> a, absl::Span<const double> b, double t) {
  const size_t n = a.size();
  double cos = 0.0;
  for (size_t i = 0; i < n; ++i) cos += a[i] * b[i];
  const double theta = std::acos(std::clamp(cos, -1.0, 1.0));
  std::vector<double> e(n);
  if (theta < kSmallAngle) {
    for (size_t i = 0; i < n; ++i) e[i] = (1.0 - t) * a[i] + t * b[i];
    double norm = 0.0;
    for (double x : e) norm += x * x;
    norm = std::sqrt(norm);
    for (double& x : e) x /= norm;
    return e;
  }
  const double s = std::sin(theta);
  const double wa = std::sin((1.0 - t) * theta) / s, wb = std::sin(t * theta) / s;
  for (size_t i = 0; i < n; ++i) e[i] = wa * a[i] + wb * b[i];
  return e;
}

absl::StatusOr<std::vector<HeadEntries>> MiniCacheHeads(const MiniCacheOptions& options,
                                                        const CodecSpec& codec,
                                                        const SpanHeader& header,
                                                        const DenseKvView& kv) {
  RETURN_IF_ERROR(CheckRatio(options.from, "minicache from"));
  RETURN_IF_ERROR(CheckRatio(options.t, "minicache t"));
  RETURN_IF_ERROR(CheckRatio(options.retain, "minicache retain"));
  RETURN_IF_ERROR(internal::CheckDenseView(header.geometry, kv, "MiniCacheHeads"));
  const SpanGeometry& g = header.geometry;
  std::vector<HeadEntries> heads(g.num_heads_total());
  const int first = FirstSharingLayer(options.from, g.num_layers);
  int l = 0;
  for (; l < first; ++l) RETURN_IF_ERROR(PlainLayer(codec, header, kv, l, &heads));
  for (; l + 1 < g.num_layers; l += 2) {  // pairs (l, l + 1)
    for (int h = 0; h < g.num_kv_heads; ++h) RETURN_IF_ERROR(MergePair(options, codec, header, kv, l, h, &heads));
  }
  if (l < g.num_layers) RETURN_IF_ERROR(PlainLayer(codec, header, kv, l, &heads));  // the unpaired last layer
  return heads;
}

absl::StatusOr<std::vector<HeadEntries>> PodHeads(const PodOptions& options,
                                                  const CodecSpec& codec,
                                                  const SpanHeader& header,
                                                  const DenseKvView& kv) {
  RETURN_IF_ERROR(CheckRatio(options.from, "pod from"));
  if (options.group < 1 || options.sinks < 0 || options.window < 0) {
    return absl::InvalidArgumentError(absl::StrCat("pod: group ", options.group, ", sinks ",
                                                   options.sinks, ", window ", options.window));
  }
  RETURN_IF_ERROR(internal::CheckDenseView(header.geometry, kv, "PodHeads"));
  const SpanGeometry& g = header.geometry;
  std::vector<HeadEntries> heads(g.num_heads_total());
  const int first = FirstSharingLayer(options.from, g.num_layers);
  for (int l = 0; l < first; ++l) RETURN_IF_ERROR(PlainLayer(codec, header, kv, l, &heads));
  const reducers::SinksWindowOptions protect{options.sinks, options.window};
  const reducers::SpanContext ctx{header.first_position, g.span_tokens};
  std::vector<int> distant, proximal;
  for (int t = 0; t < g.span_tokens; ++t) {
    (reducers::InSinksOrWindow(protect, ctx, header.first_position + t) ? proximal : distant)
        .push_back(t);
  }
  for (int lo = first; lo < g.num_layers; lo += options.group) {
    const int hi = std::min(g.num_layers, lo + options.group);  // group [lo, hi)
    if (hi - lo == 1) {
      RETURN_IF_ERROR(PlainLayer(codec, header, kv, lo, &heads));
      continue;
    }
    for (int h = 0; h < g.num_kv_heads; ++h) {
      const ReducedEntries base_rows = Gather(header, kv, lo, h, distant);
      ASSIGN_OR_RETURN(EntryBlock base, EncodeBlock(codec, base_rows.view()));
      for (int l = lo; l < hi; ++l) {
        HeadEntries& head = heads[static_cast<size_t>(l) * g.num_kv_heads + h];
        if (l == lo) {
          head.blocks = {base};
        } else {
          // Own values, encoded as a block whose keys are discarded (values are encoded
          // per token, so they do not depend on the keys).
          ReducedEntries rows = Gather(header, kv, l, h, distant);
          rows.keys = rows.values;
          ASSIGN_OR_RETURN(EntryBlock own, EncodeBlock(codec, rows.view()));
          EntryBlock shared = SharedOf(base, lo, BlockShares::kKeys);
          shared.value_data = std::move(own.value_data);
          shared.value_params = std::move(own.value_params);
          head.blocks = {std::move(shared)};
        }
        if (!proximal.empty()) {
          const ReducedEntries rows = Gather(header, kv, l, h, proximal);
          ASSIGN_OR_RETURN(EntryBlock block1, EncodeBlock(codec, rows.view()));
          head.blocks.push_back(std::move(block1));
        }
      }
    }
  }
  return heads;
}

}  // namespace kvspan::kvcache
