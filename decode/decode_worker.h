// DecodeWorker: continuous batching over compressed KV caches. One scheduler thread owns
// every admitted sequence and its cache; each step is one DecodeBackend::Forward
// (backend.h: the CPU model, or a GPU's) over the running sequences: their decode tokens first, then prefill chunks of the sequences still
// prefilling, up to a per-step token budget (chunked prefill mixed with decode). Chunks of
// a compressed sequence end at span boundaries, so a cold prefill attends to its earlier
// spans in their compressed form exactly as a warm one (spans from the cache store) does.
// New sequences join between steps; finished, failed and cancelled ones leave at once and
// free their memory. Each new full span of a storable policy is put to the cache store
// (asynchronously, by prefill::SpanStore).
//
// Memory: a KV budget in bytes over every running sequence and every resident session
// cache, kept with the caches' measured memory_bytes(). A sequence is admitted when its
// planned size (CachePolicy::PlannedBytes of its prompt) fits beside what is held (each
// running sequence counted at no less than its own planned size), else it waits in the
// bounded queue. When the running sequences grow past the budget, resident
// session caches are dropped first (least recently used), then the youngest running
// sequence is preempted: its cache is freed and it resumes later from its spans in the
// cache store (only its dense tail is recomputed), or, for a policy that is not storable,
// by recomputing its tokens (docs/architecture.md, "Preemption").
//
// Sessions: when a session turn finishes, its cache stays resident (keyed by session id)
// so the next turn reuses it without touching the store; under memory pressure or on
// CloseSession it is dropped, and the next turn loads the session's spans from the store.
//
// Thread-safe: Submit, DropResident, Stats and ResidentTokens may be called from any thread.
#ifndef KVSPAN_DECODE_DECODE_WORKER_H_
#define KVSPAN_DECODE_DECODE_WORKER_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "decode/backend.h"
#include "decode/handoff.h"
#include "decode/sequence.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "prefill/store_router.h"

namespace kvspan::decode {

struct DecodeWorkerOptions {
  // Bytes of KV memory (compressed spans + dense tails, measured) over all sequences.
  int64_t kv_budget_bytes = int64_t{1} << 30;
  // Requests waiting for admission at most; Submit beyond it is ResourceExhausted.
  int max_queue = 256;
  // Tokens one step feeds at most (decode tokens first, then prefill chunks). At least one
  // prefill chunk runs per step while any sequence prefills.
  int step_tokens = 512;
  // Longest prefill chunk of a dense (uncompressed) sequence; compressed sequences chunk at
  // span boundaries.
  int dense_chunk_tokens = 512;
  // Running sequences at most.
  int max_running = 256;
};

struct DecodeWorkerStats {
  int running = 0;
  int waiting = 0;            // queued for admission, or reloading after preemption
  int resident_sessions = 0;
  int64_t kv_bytes_in_use = 0;  // running + resident, measured
  int64_t steps = 0;
  int64_t preemptions = 0;
  int64_t resident_hits = 0;
  int64_t resident_misses = 0;  // a resident cache expected but gone at admission
  int64_t tokens_generated = 0;
};

class DecodeWorker {
 public:
  // Starts the scheduler thread over `backend` (owned). `tokenizer` is borrowed and must
  // outlive the worker; `stores` (shared) gives each sequence's cache-store namespace.
  DecodeWorker(std::unique_ptr<DecodeBackend> backend, const model::Tokenizer* tokenizer,
               std::shared_ptr<prefill::StoreRouter> stores, const DecodeWorkerOptions& options);
  // Over the CPU: a CpuBackend of `model` (borrowed, must outlive the worker).
  DecodeWorker(const model::Model* model, const model::Tokenizer* tokenizer,
               std::shared_ptr<prefill::StoreRouter> stores, const DecodeWorkerOptions& options);
  // Stops the thread: sequences still running or waiting end with Unavailable.
  ~DecodeWorker();
  DecodeWorker(const DecodeWorker&) = delete;
  DecodeWorker& operator=(const DecodeWorker&) = delete;

  // Queues a sequence for admission; its sink receives everything from now on.
  // InvalidArgument for options GenerationState rejects or a prompt past the context;
  // Unimplemented for a policy the backend cannot keep (DecodeBackend::CheckPolicy);
  // ResourceExhausted when the queue is full or the sequence could never fit the KV budget
  // (its planned size at prompt + max_tokens tokens exceeds it). On error the sink is not
  // called.
  absl::Status Submit(SequenceHandoff handoff);

  // Flow control before a transfer (transport/): blocks until `bytes` of the KV budget are
  // free beside what is held, planned and already reserved (and nothing is queued), then
  // reserves them for a sequence about to be shipped here. The caller Unreserves them when
  // it Submits that sequence (or gives up). ResourceExhausted at once when `bytes` exceed
  // the whole budget or max_queue requests already wait; DeadlineExceeded, Cancelled (when
  // `cancelled`, polled, returns true; may be null) or Unavailable (stopping) while waiting.
  absl::Status Reserve(int64_t bytes, Clock::time_point deadline, const std::function<bool()>& cancelled);
  void Unreserve(int64_t bytes);

  // Tokens of `session_id`'s resident cache under `policy` (canonical), 0 if none.
  int ResidentTokens(const std::string& session_id, const std::string& policy) const;
  // Frees `session_id`'s resident cache, if any.
  void DropResident(const std::string& session_id);

  DecodeWorkerStats Stats() const;
  const DecodeWorkerOptions& options() const { return options_; }
  const DecodeBackend& backend() const { return *backend_; }

  // Blocks until no sequence is running or waiting (tests, shutdown drain).
  void WaitIdle();

 private:
  struct Resident {
    std::unique_ptr<BackendCache> cache;
    std::vector<int32_t> tokens;  // the tokens in the cache
    std::string policy;
    int64_t last_use = 0;         // step counter
  };

  void Loop();
  // Moves queued sequences into the running set while the budget allows.
  void Admit() ABSL_LOCKS_EXCLUDED(mu_);
  // Creates the sequence's cache from the resident cache or its prefix spans. False when it
  // must go back for a store reload instead.
  absl::StatusOr<bool> Attach(Sequence& seq);
  // One Forward over the running set; finishes, fails or advances each sequence.
  void Step();
  void Preempt(std::unique_ptr<Sequence> seq);
  // Queues `seq` for the loader thread, which loads its cached prefix from the store and
  // puts it back at the front of the admission queue.
  void Reload(std::unique_ptr<Sequence> seq);
  void LoaderLoop();
  // After the sequence's tokens were fed (or it arrived shipped): stores and reports new
  // spans, then continues the prompt, ends a prefill-only sequence, or takes the next token:
  // `sampled` when the backend sampled it, else sampled from seq.logits.
  void AfterFeed(Sequence& seq, Clock::time_point now, std::optional<int32_t> sampled = std::nullopt);
  // Prefill-only: gives the sink the spans it has not seen yet.
  void ReportSpans(Sequence& seq);
  // Prefill-only: the prompt is computed; exports the dense rows and ends with OnPrefilled.
  void FinishPrefill(Sequence& seq);
  void Finish(Sequence& seq);
  void Fail(Sequence& seq, const absl::Status& status);
  // Ends sequences whose client went away or whose deadline passed.
  void DropGone();
  int64_t RunningBytes() const;  // scheduler thread: the running caches' memory_bytes()
  int64_t HeldBytes() const;     // scheduler thread: running + resident
  // Scheduler thread: as HeldBytes, but each running sequence counts at least its planned
  // size at its current tokens (one admitted and not yet prefilled holds almost nothing).
  int64_t ReservedBytes() const;
  // What one running sequence counts for in ReservedBytes: its measured memory, at least
  // its planned size at its current tokens.
  static int64_t ReservedBytesOf(const Sequence& seq);
  // Inserts or erases a resident cache, keeping resident_bytes_ and the stats.
  void AddResidentLocked(const std::string& session_id, Resident resident) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<Resident> TakeResidentLocked(const std::string& session_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops least recently used resident caches (never `keep_session`'s) until
  // HeldBytes() + bytes_needed <= the budget or none is left.
  void EvictResidentUntil(int64_t bytes_needed, const std::string& keep_session) ABSL_LOCKS_EXCLUDED(mu_);
  // Publishes running (sequences not done), waiting and their measured bytes. Called after
  // each step and before a sink hears its sequence's end. Scheduler thread.
  void PublishStats() ABSL_LOCKS_EXCLUDED(mu_);

  const std::unique_ptr<DecodeBackend> backend_;
  const model::Tokenizer* const tokenizer_;
  const std::shared_ptr<prefill::StoreRouter> stores_;
  const DecodeWorkerOptions options_;

  // Owned by the scheduler thread.
  std::vector<std::unique_ptr<Sequence>> running_;
  int64_t admission_counter_ = 0;
  int64_t step_counter_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;       // work arrived / stop
  std::condition_variable idle_cv_;  // the worker went idle
  std::deque<std::unique_ptr<Sequence>> queue_ ABSL_GUARDED_BY(mu_);  // front first
  int reloading_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, Resident> resident_ ABSL_GUARDED_BY(mu_);
  DecodeWorkerStats stats_ ABSL_GUARDED_BY(mu_);  // kv_bytes_in_use: see Stats()
  int64_t running_bytes_ ABSL_GUARDED_BY(mu_) = 0;   // published by the scheduler after each step
  int64_t resident_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // kept with resident_
  // Published with running_bytes_: the running sequences as ReservedBytes counts them.
  int64_t running_reserved_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t transfer_reserved_ ABSL_GUARDED_BY(mu_) = 0;  // Reserve()d, not yet Submitted
  int reserve_waiters_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  std::thread loader_;  // store reloads of preempted / resident-miss sequences
  std::deque<std::unique_ptr<Sequence>> reload_queue_ ABSL_GUARDED_BY(mu_);
  std::condition_variable reload_cv_;
  std::thread thread_;
};

}  // namespace kvspan::decode

#endif  // KVSPAN_DECODE_DECODE_WORKER_H_
