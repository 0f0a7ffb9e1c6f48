// SpanStore: the span <-> cache-store layer of the serving node. Before a prompt is
// prefilled, LoadPrefix finds and loads the longest cached run of its leading compressed
// spans; after the model compresses a new full span, PutAsync writes it to the store in
// the background. Keys follow docs/key-scheme.md; values are serialized spans
// (docs/span-format.md). The store is a cache: nothing here ever fails a request because
// of it. A store error, a miss or a bad span only means "recompute from here"; each one
// is counted (Stats) and logged.
//
// Thread-safe: every method may be called concurrently.
#ifndef KVSPAN_PREFILL_SPAN_STORE_H_
#define KVSPAN_PREFILL_SPAN_STORE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cachestore/client.h"
#include "cachestore/key_scheme.h"
#include "cachestore/span_key.h"
#include "common/thread_pool.h"
#include "kvcache/span.h"
#include "kvcache/span_geometry.h"

namespace kvspan::prefill {

struct SpanStoreOptions {
  // Where spans live: any CacheClient (embedded, remote, sharded). Required; shared.
  std::shared_ptr<cachestore::CacheClient> client;
  // Identifies the model weights; equals SpanHeader::model_fingerprint of every span.
  std::string model_fingerprint;
  // The compression policy's canonical string (kvcache::Policy::ToString()); equals
  // SpanHeader::policy of every span.
  std::string policy;
  // kvcache::Policy::fingerprint() of `policy`. It enters the namespace as 16 lowercase
  // hex digits (docs/key-scheme.md, "The serving node's namespace").
  uint64_t policy_fingerprint = 0;
  // Tenant salt of the namespace; empty = a cache shared by all tenants.
  std::string tenant_salt;
  // The shape of every span; geometry.span_tokens is S, the namespace's span length.
  kvcache::SpanGeometry geometry;
  // Threads that Get the hit spans of one LoadPrefix in parallel (the caller is one).
  int num_get_threads = 4;
  // Background threads that serialize and Put spans.
  int num_put_threads = 1;
  // Puts queued and not yet finished beyond which PutAsync drops a span (counted as
  // num_puts_dropped): a slow store must not grow memory without bound.
  int max_pending_puts = 1024;
};

// What one LoadPrefix found. Counters count this call's events only.
struct LoadedPrefix {
  // spans[i] is span i of the prompt, for the longest valid leading run.
  std::vector<kvcache::Span> spans;
  // key(span i) of every full span of the prompt (not only the loaded ones): what the
  // caller passes to PutAsync for the spans it computes. Empty if the tokens are invalid.
  std::vector<cachestore::SpanKey> keys;
  int64_t num_spans_looked_up = 0;  // keys sent to Lookup: min(full spans, max_spans)
  int64_t num_spans_hit = 0;        // leading keys the store reported present
  int64_t num_spans_loaded = 0;     // spans.size()
  int64_t bytes_loaded = 0;         // serialized bytes of the loaded spans
  int64_t num_store_errors = 0;     // failed Lookup / Get / Delete calls
  int64_t num_get_errors = 0;       // of those, hit spans whose Get failed
  int64_t num_misses = 0;           // hit spans whose Get found nothing
  int64_t num_bad_spans = 0;        // hit spans that failed ParseSpan or the header checks
  double seconds = 0.0;             // wall time of the call
};

// Cumulative counters since Create.
struct SpanStoreStats {
  int64_t num_puts_ok = 0;
  int64_t num_puts_failed = 0;     // the store answered a Put with an error
  int64_t num_puts_refused = 0;    // not storable (CheckStorable) or not this store's span
  int64_t num_puts_dropped = 0;    // max_pending_puts reached
  int64_t bytes_put = 0;           // serialized bytes of the successful Puts
  int64_t num_lookups = 0;         // Lookup calls (one per LoadPrefix with a full span)
  int64_t num_spans_looked_up = 0;
  int64_t num_spans_hit = 0;
  int64_t num_spans_loaded = 0;
  int64_t bytes_loaded = 0;
  int64_t num_misses = 0;
  int64_t num_store_errors = 0;    // load side: failed Lookup / Get / Delete
  int64_t num_get_errors = 0;      // of those, hit spans whose Get failed
  int64_t num_bad_spans = 0;       // found bad by LoadPrefix
  int64_t num_bad_spans_deleted = 0;  // of those, Deleted from the store

  // Field by field: the sum of several stores' counters (StoreRouter::TotalStats).
  SpanStoreStats& operator+=(const SpanStoreStats& o);
};

class SpanStore {
 public:
  // InvalidArgument for: a null client; a policy that does not parse, is not in canonical
  // form or does not have `policy_fingerprint`; a bad geometry; a bad namespace (empty
  // model fingerprint, fields over cachestore::kMaxFingerprintBytes); thread counts or
  // max_pending_puts below 1. Starts the Put threads.
  static absl::StatusOr<std::unique_ptr<SpanStore>> Create(const SpanStoreOptions& options);

  // Flush()es, then stops the threads.
  ~SpanStore();
  SpanStore(const SpanStore&) = delete;
  SpanStore& operator=(const SpanStore&) = delete;

  // key(span i) of every full span of `tokens` (a trailing partial span has none), token
  // ids hashed as u32 (docs/key-scheme.md). InvalidArgument for a negative token id.
  absl::StatusOr<std::vector<cachestore::SpanKey>> KeyChain(absl::Span<const int32_t> tokens) const;
  // key(span -1), the namespace key that Lookup takes.
  const cachestore::SpanKey& namespace_key() const { return namespace_key_; }
  const cachestore::Namespace& cache_namespace() const { return namespace_; }
  int span_tokens() const { return options_.geometry.span_tokens; }

  // Looks up at most max(max_spans, 0) leading keys of `tokens`' chain, Gets the hit spans
  // in parallel, parses each and checks its header against this store (model
  // fingerprint, policy, geometry; first_position == i * S; span_index == i;
  // ValidateSpan). Returns the longest leading run of spans that passed. Never fails: a
  // store error, a miss or a bad span ends the run before that span; every such event
  // among the fetched spans is counted and logged, and every bad span is Deleted from the
  // store (a span that fails is bad for every reader). Negative token ids load nothing.
  LoadedPrefix LoadPrefix(absl::Span<const int32_t> tokens, int max_spans);

  // Queues `span` to be stored under `key` (REQUIRES: key is KeyChain(tokens)[i] where
  // span is span i of tokens) and returns at once. Refused (counted, logged, not written)
  // when kvcache::CheckStorable(span.header.policy) fails (a query-aware policy such as
  // snapkv, or a label that does not parse), when the header's model fingerprint, policy or
  // geometry is not this store's, or when ValidateSpan fails. A background thread
  // serializes it (kvcache::SerializeSpan) and Puts it; a store error is counted and
  // logged, never returned.
  void PutAsync(const cachestore::SpanKey& key, kvcache::Span span);

  // Blocks until every Put queued before this call has finished (succeeded or failed).
  void Flush();

  SpanStoreStats stats() const;

 private:
  struct PutTask {
    uint64_t seq = 0;
    cachestore::SpanKey key;
    kvcache::Span span;
  };
  // What fetching span i found.
  struct Fetched;

  SpanStore(const SpanStoreOptions& options, const cachestore::Namespace& ns,
            const cachestore::SpanKey& namespace_key);
  void PutLoop();
  void Put(const PutTask& task);
  // Get, ParseSpan and the header checks of span i under `key`.
  Fetched Fetch(const cachestore::SpanKey& key, int64_t i);
  // OK when `span` is this store's span number `index` (kvcache::CheckSpanIdentity).
  absl::Status CheckHeader(const kvcache::Span& span, int64_t index) const;
  void AddToStats(const LoadedPrefix& loaded, int64_t bad_spans_deleted);

  const SpanStoreOptions options_;
  const cachestore::Namespace namespace_;
  const cachestore::SpanKey namespace_key_;
  ThreadPool get_pool_;

  // NOTE: std locks, not absl::Mutex, as in cachestore/store.h (TSAN sees them).
  std::mutex put_mu_;
  std::condition_variable put_cv_;    // signalled when a task is queued or stop_ is set
  std::condition_variable flush_cv_;  // signalled when a task finishes
  std::deque<PutTask> put_queue_ ABSL_GUARDED_BY(put_mu_);
  std::set<uint64_t> puts_unfinished_ ABSL_GUARDED_BY(put_mu_);  // seqs queued or running
  uint64_t next_put_seq_ ABSL_GUARDED_BY(put_mu_) = 1;
  bool stop_ ABSL_GUARDED_BY(put_mu_) = false;
  std::vector<std::thread> put_threads_;

  mutable std::mutex stats_mu_;
  SpanStoreStats stats_ ABSL_GUARDED_BY(stats_mu_);
};

}  // namespace kvspan::prefill

#endif  // KVSPAN_PREFILL_SPAN_STORE_H_
