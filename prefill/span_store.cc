#include "prefill/span_store.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "kvcache/policy.h"
#include "kvcache/span_format.h"

namespace kvspan::prefill {

using cachestore::SpanKey;

struct SpanStore::Fetched {
  enum class Outcome { kLoaded, kStoreError, kMiss, kBadSpan };
  Outcome outcome = Outcome::kMiss;
  kvcache::Span span;    // when kLoaded
  int64_t bytes = 0;     // serialized size, when kLoaded
  bool deleted = false;  // when kBadSpan: the Delete succeeded
};

namespace {

absl::Status CheckOptions(const SpanStoreOptions& o) {
  if (o.client == nullptr) return absl::InvalidArgumentError("SpanStoreOptions.client is null");
  absl::StatusOr<kvcache::Policy> policy = kvcache::ParsePolicy(o.policy);
  if (!policy.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("SpanStoreOptions.policy: ", policy.status().message()));
  }
  if (policy->ToString() != o.policy) {
    return absl::InvalidArgumentError(absl::StrCat("SpanStoreOptions.policy \"", o.policy,
                                                   "\" is not canonical; its canonical form is \"",
                                                   policy->ToString(), "\""));
  }
  if (policy->fingerprint() != o.policy_fingerprint) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "SpanStoreOptions.policy_fingerprint %016x is not the fingerprint %016x of \"%s\"",
        o.policy_fingerprint, policy->fingerprint(), o.policy));
  }
  RETURN_IF_ERROR(kvcache::ValidateGeometry(o.geometry));
  if (o.num_get_threads < 1 || o.num_put_threads < 1 || o.max_pending_puts < 1) {
    return absl::InvalidArgumentError(
        "SpanStoreOptions: num_get_threads, num_put_threads and max_pending_puts must be >= 1");
  }
  return absl::OkStatus();
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SpanStore>> SpanStore::Create(const SpanStoreOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  cachestore::Namespace ns;
  ns.model_fingerprint = options.model_fingerprint;
  ns.policy_fingerprint = absl::StrFormat("%016x", options.policy_fingerprint);
  ns.span_length = static_cast<uint32_t>(options.geometry.span_tokens);
  ns.tenant_salt = options.tenant_salt;
  ASSIGN_OR_RETURN(const SpanKey namespace_key, cachestore::NamespaceKey(ns));
  return std::unique_ptr<SpanStore>(new SpanStore(options, ns, namespace_key));
}

SpanStore::SpanStore(const SpanStoreOptions& options, const cachestore::Namespace& ns,
                     const SpanKey& namespace_key)
    : options_(options), namespace_(ns), namespace_key_(namespace_key),
      get_pool_(options.num_get_threads) {
  for (int i = 0; i < options_.num_put_threads; ++i) {
    put_threads_.emplace_back([this] { PutLoop(); });
  }
}

SpanStore::~SpanStore() {
  Flush();
  {
    std::lock_guard<std::mutex> lock(put_mu_);
    stop_ = true;
  }
  put_cv_.notify_all();
  for (std::thread& t : put_threads_) t.join();
}

absl::StatusOr<std::vector<SpanKey>> SpanStore::KeyChain(absl::Span<const int32_t> tokens) const {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("token ", i, " has the negative id ", tokens[i]));
    }
  }
  // int32_t and uint32_t may alias, and every id is non-negative, so the u32 view holds the
  // same values.
  return cachestore::SpanKeyChain(
      namespace_, absl::MakeConstSpan(reinterpret_cast<const uint32_t*>(tokens.data()), tokens.size()));
}

absl::Status SpanStore::CheckHeader(const kvcache::Span& span, int64_t index) const {
  return kvcache::CheckSpanIdentity(span, options_.model_fingerprint, options_.policy, options_.geometry, index);
}

SpanStore::Fetched SpanStore::Fetch(const SpanKey& key, int64_t i) {
  Fetched f;
  absl::StatusOr<std::optional<cachestore::Value>> value = options_.client->Get(key);
  if (!value.ok()) {
    LOG(WARNING) << "span store: Get of span " << i << " (" << key.ToHex() << ") failed: "
                 << value.status() << "; recomputing from there";
    f.outcome = Fetched::Outcome::kStoreError;
    return f;
  }
  if (!value->has_value()) {
    LOG(WARNING) << "span store: span " << i << " (" << key.ToHex()
                 << ") was looked up but Get missed; recomputing from there";
    f.outcome = Fetched::Outcome::kMiss;
    return f;
  }
  const std::string& bytes = ***value;
  absl::StatusOr<kvcache::Span> span = kvcache::ParseSpan(bytes);
  absl::Status check = span.ok() ? CheckHeader(*span, i) : span.status();
  if (!check.ok()) {
    f.outcome = Fetched::Outcome::kBadSpan;
    const absl::Status deleted = options_.client->Delete(key);
    f.deleted = deleted.ok();
    LOG(WARNING) << "span store: span " << i << " (" << key.ToHex() << ") is bad: " << check
                 << "; " << (f.deleted ? "deleted" : absl::StrCat("Delete failed: ", deleted.ToString()))
                 << "; recomputing from there";
    return f;
  }
  f.outcome = Fetched::Outcome::kLoaded;
  f.span = *std::move(span);
  f.bytes = static_cast<int64_t>(bytes.size());
  return f;
}

LoadedPrefix SpanStore::LoadPrefix(absl::Span<const int32_t> tokens, int max_spans) {
  const auto start = std::chrono::steady_clock::now();
  LoadedPrefix out;
  absl::StatusOr<std::vector<SpanKey>> keys = KeyChain(tokens);
  if (!keys.ok()) {
    LOG(WARNING) << "span store: no prefix loaded: " << keys.status();
    out.seconds = SecondsSince(start);
    return out;
  }
  out.keys = *std::move(keys);
  const size_t n = std::min({out.keys.size(), static_cast<size_t>(std::max(max_spans, 0)),
                             cachestore::kMaxLookupKeys});
  out.num_spans_looked_up = static_cast<int64_t>(n);
  int64_t bad_spans_deleted = 0;
  if (n > 0) {
    absl::StatusOr<size_t> hit = options_.client->Lookup(namespace_key_, absl::MakeConstSpan(out.keys.data(), n));
    if (!hit.ok()) {
      LOG(WARNING) << "span store: Lookup of " << n << " spans failed: " << hit.status()
                   << "; recomputing the whole prompt";
      ++out.num_store_errors;
    } else {
      out.num_spans_hit = static_cast<int64_t>(std::min(*hit, n));
      std::vector<Fetched> fetched(out.num_spans_hit);
      get_pool_.ParallelFor(out.num_spans_hit,
                            [&](int64_t i) { fetched[i] = Fetch(out.keys[i], i); });
      // The run ends at the first span not loaded; every failure is still counted.
      bool in_run = true;
      for (Fetched& f : fetched) {
        switch (f.outcome) {
          case Fetched::Outcome::kLoaded:
            if (in_run) {
              out.bytes_loaded += f.bytes;
              out.spans.push_back(std::move(f.span));
            }
            continue;
          case Fetched::Outcome::kStoreError:
            ++out.num_store_errors;
            ++out.num_get_errors;
            break;
          case Fetched::Outcome::kMiss: ++out.num_misses; break;
          case Fetched::Outcome::kBadSpan:
            ++out.num_bad_spans;
            if (f.deleted) ++bad_spans_deleted; else ++out.num_store_errors;
            break;
        }
        in_run = false;
      }
    }
  }
  out.num_spans_loaded = static_cast<int64_t>(out.spans.size());
  out.seconds = SecondsSince(start);
  AddToStats(out, bad_spans_deleted);
  return out;
}

SpanStoreStats& SpanStoreStats::operator+=(const SpanStoreStats& o) {
  num_puts_ok += o.num_puts_ok;
  num_puts_failed += o.num_puts_failed;
  num_puts_refused += o.num_puts_refused;
  num_puts_dropped += o.num_puts_dropped;
  bytes_put += o.bytes_put;
  num_lookups += o.num_lookups;
  num_spans_looked_up += o.num_spans_looked_up;
  num_spans_hit += o.num_spans_hit;
  num_spans_loaded += o.num_spans_loaded;
  bytes_loaded += o.bytes_loaded;
  num_misses += o.num_misses;
  num_store_errors += o.num_store_errors;
  num_get_errors += o.num_get_errors;
  num_bad_spans += o.num_bad_spans;
  num_bad_spans_deleted += o.num_bad_spans_deleted;
  return *this;
}

void SpanStore::AddToStats(const LoadedPrefix& loaded, int64_t bad_spans_deleted) {
  std::lock_guard<std::mutex> lock(stats_mu_);
  if (loaded.num_spans_looked_up > 0) ++stats_.num_lookups;
  stats_.num_spans_looked_up += loaded.num_spans_looked_up;
  stats_.num_spans_hit += loaded.num_spans_hit;
  stats_.num_spans_loaded += loaded.num_spans_loaded;
  stats_.bytes_loaded += loaded.bytes_loaded;
  stats_.num_misses += loaded.num_misses;
  stats_.num_store_errors += loaded.num_store_errors;
  stats_.num_get_errors += loaded.num_get_errors;
  stats_.num_bad_spans += loaded.num_bad_spans;
  stats_.num_bad_spans_deleted += bad_spans_deleted;
}

void SpanStore::PutAsync(const SpanKey& key, kvcache::Span span) {
  absl::Status storable = kvcache::CheckStorable(span.header.policy);
  if (storable.ok()) storable = CheckHeader(span, span.header.span_index);
  if (storable.ok()) storable = kvcache::ValidateSpan(span);  // not from ParseSpan: check it all
  if (!storable.ok()) {
    LOG(WARNING) << "span store: Put of span " << span.header.span_index << " (" << key.ToHex()
                 << ") refused: " << storable;
    std::lock_guard<std::mutex> lock(stats_mu_);
    ++stats_.num_puts_refused;
    return;
  }
  {
    std::lock_guard<std::mutex> lock(put_mu_);
    if (puts_unfinished_.size() < static_cast<size_t>(options_.max_pending_puts)) {
      const uint64_t seq = next_put_seq_++;
      puts_unfinished_.insert(seq);
      put_queue_.push_back(PutTask{seq, key, std::move(span)});
      put_cv_.notify_one();
      return;
    }
  }
  LOG(WARNING) << "span store: Put of " << key.ToHex() << " dropped: " << options_.max_pending_puts
               << " Puts pending";
  std::lock_guard<std::mutex> lock(stats_mu_);
  ++stats_.num_puts_dropped;
}

void SpanStore::PutLoop() {
  for (;;) {
    PutTask task;
    {
      std::unique_lock<std::mutex> lock(put_mu_);
      put_cv_.wait(lock, [this] { return stop_ || !put_queue_.empty(); });
      if (put_queue_.empty()) return;  // stopping, and nothing left to write
      task = std::move(put_queue_.front());
      put_queue_.pop_front();
    }
    Put(task);
    {
      std::lock_guard<std::mutex> lock(put_mu_);
      puts_unfinished_.erase(task.seq);
    }
    flush_cv_.notify_all();
  }
}

void SpanStore::Put(const PutTask& task) {
  const std::string bytes = kvcache::SerializeSpan(task.span);
  const absl::Status put = options_.client->Put(task.key, bytes);
  if (!put.ok()) {
    LOG(WARNING) << "span store: Put of span " << task.span.header.span_index << " ("
                 << task.key.ToHex() << ") failed: " << put;
  }
  std::lock_guard<std::mutex> lock(stats_mu_);
  if (put.ok()) {
    ++stats_.num_puts_ok;
    stats_.bytes_put += static_cast<int64_t>(bytes.size());
  } else {
    ++stats_.num_puts_failed;
  }
}

void SpanStore::Flush() {
  std::unique_lock<std::mutex> lock(put_mu_);
  const uint64_t last_queued = next_put_seq_ - 1;
  flush_cv_.wait(lock, [&] {
    return puts_unfinished_.empty() || *puts_unfinished_.begin() > last_queued;
  });
}

SpanStoreStats SpanStore::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return stats_;
}

}  // namespace kvspan::prefill
