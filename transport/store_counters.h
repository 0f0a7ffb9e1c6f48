// The wire form of the span stores' counters (kvspan.v1.StoreCounters), both ways: workers
// report theirs in Info, the frontend sums them for ServerInfo and /metrics.
#ifndef KVSPAN_TRANSPORT_STORE_COUNTERS_H_
#define KVSPAN_TRANSPORT_STORE_COUNTERS_H_

#include "kvspan/v1/serving.pb.h"
#include "prefill/span_store.h"

namespace kvspan::transport {

void ToProto(const prefill::SpanStoreStats& stats, v1::StoreCounters* out);
prefill::SpanStoreStats FromProto(const v1::StoreCounters& counters);

}  // namespace kvspan::transport

#endif  // KVSPAN_TRANSPORT_STORE_COUNTERS_H_
