#include "kvcache/reducers/sinks_window.h"

namespace kvspan::kvcache::reducers {

bool InSinksOrWindow(const SinksWindowOptions& options, const SpanContext& ctx, int32_t position) {
  if (position < options.num_sinks) return true;
  const int64_t window_start =
      int64_t{ctx.first_position} + ctx.span_tokens - options.window_tokens;
  return position >= window_start;
}

}  // namespace kvspan::kvcache::reducers
