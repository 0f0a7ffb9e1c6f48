#include "decode/decode_worker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace kvspan::decode {
namespace {

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

DecodeWorker::DecodeWorker(const model::Model* model, const model::Tokenizer* tokenizer,
                           std::shared_ptr<prefill::StoreRouter> stores, const DecodeWorkerOptions& options)
    : DecodeWorker(std::make_unique<CpuBackend>(model), tokenizer, std::move(stores), options) {}

DecodeWorker::DecodeWorker(std::unique_ptr<DecodeBackend> backend, const model::Tokenizer* tokenizer,
                           std::shared_ptr<prefill::StoreRouter> stores, const DecodeWorkerOptions& options)
    : backend_(std::move(backend)), tokenizer_(tokenizer), stores_(std::move(stores)), options_(options) {
  loader_ = std::thread([this] { LoaderLoop(); });
  thread_ = std::thread([this] { Loop(); });
}

DecodeWorker::~DecodeWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  reload_cv_.notify_all();
  thread_.join();
  loader_.join();
  std::deque<std::unique_ptr<Sequence>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(queue_);
    for (auto& seq : reload_queue_) left.push_back(std::move(seq));
    reload_queue_.clear();
  }
  for (auto& seq : left) seq->handoff.sink->OnError(absl::UnavailableError("the decode worker stopped"));
}

absl::Status DecodeWorker::Submit(SequenceHandoff handoff) {
  const model::ModelConfig& config = backend_->config();
  RETURN_IF_ERROR(backend_->CheckPolicy(*handoff.policy));
  const int num_prompt = static_cast<int>(handoff.tokens.size());
  if (num_prompt == 0) return absl::InvalidArgumentError("the prompt has no tokens");
  if (num_prompt > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", num_prompt,
                                                   " tokens, more than the model's context of ",
                                                   config.max_position_embeddings));
  }
  ASSIGN_OR_RETURN(model::GenerationState state,
                   model::GenerationState::Create(handoff.generation, tokenizer_, config, num_prompt));
  if (handoff.shipped.has_value()) {
    const ShippedPrefill& shipped = *handoff.shipped;
    const int64_t covered =
        static_cast<int64_t>(handoff.prefix.size()) * handoff.policy->span_tokens() + shipped.rows.num_tokens;
    if (covered != num_prompt || static_cast<int>(shipped.logits.size()) != config.vocab_size ||
        (handoff.policy->dense() && !handoff.prefix.empty())) {
      return absl::InvalidArgumentError(absl::StrCat("the shipped sequence covers ", covered, " of ", num_prompt,
                                                     " prompt tokens with ", shipped.logits.size(), " logits"));
    }
  }
  const int capacity = handoff.prefill_only
                           ? num_prompt
                           : static_cast<int>(std::min<int64_t>(config.max_position_embeddings,
                                                                int64_t{num_prompt} + handoff.generation.max_tokens));
  const int64_t planned = handoff.policy->PlannedBytes(capacity);
  if (planned > options_.kv_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request needs ", planned, " bytes of KV cache at ", capacity, " tokens under policy ",
        handoff.policy->canonical(), ", more than the whole KV budget of ", options_.kv_budget_bytes, " bytes"));
  }
  auto seq = std::make_unique<Sequence>();
  seq->tokens = std::move(handoff.tokens);
  seq->num_prompt = num_prompt;
  seq->capacity_tokens = handoff.policy->dense() ? capacity : config.max_position_embeddings;
  seq->state.emplace(std::move(state));
  seq->store = stores_ == nullptr ? nullptr : stores_->For(*handoff.policy, handoff.tenant);
  seq->store_load_ms = handoff.store_load_ms;
  seq->handoff = std::move(handoff);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::UnavailableError("the decode worker is stopping");
    const int waiting = static_cast<int>(queue_.size()) + reloading_;
    if (waiting >= options_.max_queue) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the request queue is full (", waiting, " waiting, --max-queue ", options_.max_queue, ")"));
    }
    queue_.push_back(std::move(seq));
    stats_.waiting = static_cast<int>(queue_.size()) + reloading_;
  }
  cv_.notify_all();
  return absl::OkStatus();
}

absl::Status DecodeWorker::Reserve(int64_t bytes, Clock::time_point deadline, const std::function<bool()>& cancelled) {
  if (bytes > options_.kv_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("the request needs ", bytes,
                                                     " bytes of KV cache, more than the whole KV budget of ",
                                                     options_.kv_budget_bytes, " bytes"));
  }
  std::unique_lock<std::mutex> lock(mu_);
  const int waiting = static_cast<int>(queue_.size()) + reloading_ + reserve_waiters_;
  if (waiting >= options_.max_queue) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the request queue is full (", waiting, " waiting, --max-queue ", options_.max_queue, ")"));
  }
  ++reserve_waiters_;
  absl::Status status;
  while (true) {
    if (stop_) {
      status = absl::UnavailableError("the decode worker is stopping");
      break;
    }
    // Alone, a sequence always fits (Submit refused it if it never could); otherwise it
    // fits beside what is held, planned and reserved, behind nobody queued.
    const bool idle = stats_.running == 0 && queue_.empty() && transfer_reserved_ == 0;
    const bool fits = queue_.empty() && reloading_ == 0 &&
                      running_reserved_ + resident_bytes_ + transfer_reserved_ + bytes <= options_.kv_budget_bytes;
    if (idle || fits) {
      transfer_reserved_ += bytes;
      break;
    }
    if (Clock::now() >= deadline) {
      status = absl::DeadlineExceededError("the request's deadline passed while it waited for KV budget");
      break;
    }
    if (cancelled != nullptr && cancelled()) {
      status = absl::CancelledError("the client cancelled the request");
      break;
    }
    idle_cv_.wait_for(lock, std::chrono::milliseconds(20));
  }
  --reserve_waiters_;
  return status;
}

void DecodeWorker::Unreserve(int64_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    transfer_reserved_ -= bytes;
  }
  cv_.notify_all();
  idle_cv_.notify_all();
}

int DecodeWorker::ResidentTokens(const std::string& session_id, const std::string& policy) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = resident_.find(session_id);
  if (it == resident_.end() || it->second.policy != policy) return 0;
  return static_cast<int>(it->second.tokens.size());
}

void DecodeWorker::DropResident(const std::string& session_id) {
  std::lock_guard<std::mutex> lock(mu_);
  TakeResidentLocked(session_id);
}

void DecodeWorker::AddResidentLocked(const std::string& session_id, Resident resident) {
  TakeResidentLocked(session_id);
  resident_bytes_ += resident.cache->memory_bytes();
  resident_.emplace(session_id, std::move(resident));
  stats_.resident_sessions = static_cast<int>(resident_.size());
}

std::optional<DecodeWorker::Resident> DecodeWorker::TakeResidentLocked(const std::string& session_id) {
  auto it = resident_.find(session_id);
  if (it == resident_.end()) return std::nullopt;
  std::optional<Resident> taken(std::move(it->second));
  resident_.erase(it);
  resident_bytes_ -= taken->cache->memory_bytes();
  stats_.resident_sessions = static_cast<int>(resident_.size());
  return taken;
}

DecodeWorkerStats DecodeWorker::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  DecodeWorkerStats stats = stats_;
  stats.kv_bytes_in_use = running_bytes_ + resident_bytes_;
  return stats;
}

void DecodeWorker::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [&] { return stop_ || (queue_.empty() && reloading_ == 0 && stats_.running == 0); });
}

void DecodeWorker::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty() || !running_.empty(); });
      if (stop_) break;
    }
    DropGone();
    Admit();
    if (!running_.empty()) Step();
    PublishStats();
  }
  for (auto& seq : running_) seq->handoff.sink->OnError(absl::UnavailableError("the decode worker stopped"));
  running_.clear();
}

int64_t DecodeWorker::RunningBytes() const {
  int64_t bytes = 0;
  for (const auto& seq : running_) {
    if (seq->cache != nullptr) bytes += seq->cache->memory_bytes();
  }
  return bytes;
}

int64_t DecodeWorker::ReservedBytes() const {
  int64_t bytes = 0;
  for (const auto& seq : running_) bytes += ReservedBytesOf(*seq);
  std::lock_guard<std::mutex> lock(mu_);
  return bytes + resident_bytes_ + transfer_reserved_;
}

int64_t DecodeWorker::ReservedBytesOf(const Sequence& seq) {
  const int64_t held = seq.cache == nullptr ? 0 : seq.cache->memory_bytes();
  return std::max(held, seq.handoff.policy->PlannedBytes(static_cast<int>(seq.tokens.size())));
}

int64_t DecodeWorker::HeldBytes() const {
  const int64_t running = RunningBytes();
  std::lock_guard<std::mutex> lock(mu_);
  return running + resident_bytes_;
}

void DecodeWorker::EvictResidentUntil(int64_t bytes_needed, const std::string& keep_session) {
  while (HeldBytes() + bytes_needed > options_.kv_budget_bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto oldest = resident_.end();
    for (auto it = resident_.begin(); it != resident_.end(); ++it) {
      if (it->first == keep_session) continue;
      if (oldest == resident_.end() || it->second.last_use < oldest->second.last_use) oldest = it;
    }
    if (oldest == resident_.end()) return;
    LOG(INFO) << "decode: dropping the resident cache of session " << oldest->first << " (KV budget)";
    TakeResidentLocked(std::string(oldest->first));
  }
}

void DecodeWorker::Admit() {
  while (static_cast<int>(running_.size()) < options_.max_running) {
    std::unique_ptr<Sequence> seq;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.empty()) return;
      seq = std::move(queue_.front());
      queue_.pop_front();
    }
    const int64_t planned = seq->handoff.policy->PlannedBytes(static_cast<int>(seq->tokens.size()) + 1);
    // Sequences admitted but not yet prefilled hold little: plan with what they will hold.
    const int64_t reserved = ReservedBytes() - HeldBytes();
    EvictResidentUntil(planned + reserved, seq->handoff.use_resident ? seq->handoff.session_id : std::string());
    if (ReservedBytes() + planned > options_.kv_budget_bytes && !running_.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_front(std::move(seq));  // waits for memory; keeps its place
      return;
    }
    absl::StatusOr<bool> attached = Attach(*seq);
    if (!attached.ok()) {
      Fail(*seq, attached.status());
      continue;
    }
    if (!*attached) {
      Reload(std::move(seq));
      continue;
    }
    const Clock::time_point now = Clock::now();
    seq->admission = ++admission_counter_;
    if (!seq->started) {
      seq->started = true;
      seq->admitted = now;
      SequenceStarted s;
      s.request_id = seq->handoff.request_id;
      s.session_id = seq->handoff.session_id;
      s.policy = seq->handoff.policy->canonical();
      s.prompt_tokens = seq->num_prompt;
      s.store_prompt_tokens = seq->store_prompt_tokens;
      s.resident_prompt_tokens = seq->resident_prompt_tokens;
      s.computed_prompt_tokens = seq->num_prompt - seq->store_prompt_tokens - seq->resident_prompt_tokens;
      seq->handoff.sink->OnStarted(s);
    }
    if (seq->continue_from_logits) {  // shipped: the prompt is computed, its logits are here
      seq->continue_from_logits = false;
      AfterFeed(*seq, now);
      if (seq->done) continue;
    } else if (seq->handoff.prefill_only) {
      ReportSpans(*seq);  // the spans loaded from the store go out first
    }
    running_.push_back(std::move(seq));
  }
}

void DecodeWorker::ReportSpans(Sequence& seq) {
  if (!seq.handoff.prefill_only) return;
  const std::vector<kvcache::Span>& spans = seq.cache->spans();
  for (int s = seq.num_spans_reported; s < static_cast<int>(spans.size()); ++s) {
    seq.handoff.sink->OnSpan(s, spans[s]);
  }
  seq.num_spans_reported = static_cast<int>(spans.size());
}

absl::StatusOr<bool> DecodeWorker::Attach(Sequence& seq) {
  const kvcache::CachePolicy& policy = *seq.handoff.policy;
  if (seq.handoff.use_resident) {
    seq.handoff.use_resident = false;  // one try; a miss falls back to the store
    std::optional<Resident> resident;
    {
      std::lock_guard<std::mutex> lock(mu_);
      resident = TakeResidentLocked(seq.handoff.session_id);
    }
    const bool usable =
        resident.has_value() && resident->policy == policy.canonical() &&
        resident->tokens.size() < seq.tokens.size() &&
        std::equal(resident->tokens.begin(), resident->tokens.end(), seq.tokens.begin()) &&
        seq.capacity_tokens <= resident->cache->capacity_tokens();
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++(usable ? stats_.resident_hits : stats_.resident_misses);
    }
    if (usable) {
      seq.cache = std::move(resident->cache);
      seq.num_fed = static_cast<int>(resident->tokens.size());
      seq.resident_prompt_tokens = seq.num_fed;
    } else if (seq.store != nullptr) {
      return false;  // load the session's spans from the store instead
    }
  }
  if (seq.cache == nullptr) {
    const int num_prefix = static_cast<int>(seq.handoff.prefix.size());
    ASSIGN_OR_RETURN(seq.cache, backend_->NewCache(policy, seq.capacity_tokens, std::move(seq.handoff.prefix)));
    seq.handoff.prefix.clear();
    seq.num_fed = num_prefix * policy.span_tokens();
    if (!seq.started) seq.store_prompt_tokens = seq.num_fed;
    if (seq.handoff.shipped.has_value()) {
      // Checked by the transport: an error here is a broken sender, never decoded from.
      if (absl::Status s = seq.cache->ImportDenseRows(seq.handoff.shipped->rows); !s.ok()) {
        return absl::DataLossError(absl::StrCat("the shipped dense rows do not fit the cache: ", s.message()));
      }
      seq.num_fed = seq.cache->num_tokens();
      seq.logits = std::move(seq.handoff.shipped->logits);
      if (!seq.started) seq.store_prompt_tokens = seq.handoff.shipped->store_prompt_tokens;
      seq.shipped_prefill_ms = seq.handoff.shipped->prefill_ms;
      seq.handoff.shipped.reset();
      seq.continue_from_logits = true;
    }
  }
  seq.num_spans_stored = static_cast<int>(seq.cache->spans().size());
  return true;
}

void DecodeWorker::Step() {
  ++step_counter_;
  std::vector<BackendItem> items;
  std::vector<Sequence*> fed;
  struct Drawn {
    BackendSample sample;
    int32_t token = 0;  // sample.token_out
  };
  std::vector<Drawn> drawn;
  drawn.reserve(running_.size());  // items point into it
  // A sequence whose tokens this step feeds to the end samples next: where the backend
  // samples, it gets the options and the sequence's next draw, and no logits come back.
  auto sample_in_backend = [&](Sequence& seq, int n, BackendItem& item) {
    if (!backend_->samples_tokens() || seq.handoff.prefill_only || seq.state->finished() ||
        seq.num_fed + n != static_cast<int>(seq.tokens.size())) {
      return;
    }
    model::Sampler& sampler = seq.state->sampler();
    Drawn& d = drawn.emplace_back();
    d.sample = {&sampler.options(), sampler.greedy() ? 0.0 : sampler.DrawUniform(), &d.token};
    item.sample = &d.sample;
    item.logits = nullptr;
  };
  int budget = options_.step_tokens;
  for (auto& seq : running_) {  // decode tokens first
    if (static_cast<int>(seq->tokens.size()) - seq->num_fed != 1) continue;
    items.push_back({absl::MakeConstSpan(&seq->tokens[seq->num_fed], 1), seq->cache.get(), &seq->logits});
    sample_in_backend(*seq, 1, items.back());
    fed.push_back(seq.get());
    --budget;
  }
  bool any_prefill = false;
  for (auto& seq : running_) {  // then prefill chunks, oldest first
    if (static_cast<int>(seq->tokens.size()) - seq->num_fed <= 1) continue;
    const int limit = budget > 0 ? budget : (any_prefill ? 0 : options_.step_tokens);
    const int n = seq->NextChunk(limit, options_.dense_chunk_tokens);
    if (n <= 0) break;
    items.push_back({absl::MakeConstSpan(seq->tokens).subspan(seq->num_fed, n), seq->cache.get(), &seq->logits});
    sample_in_backend(*seq, n, items.back());
    fed.push_back(seq.get());
    budget -= n;
    any_prefill = true;
  }
  if (items.empty()) return;

  std::vector<absl::Status> results(items.size());
  absl::Status batch_status = backend_->Forward(absl::MakeSpan(items));
  if (!batch_status.ok()) {
    // Forward changed no cache: find the failing sequence(s) by running each alone.
    LOG(WARNING) << "decode: a batch of " << items.size() << " failed (" << batch_status
                 << "); retrying its sequences one by one";
    for (size_t i = 0; i < items.size(); ++i) {
      results[i] = items.size() == 1 ? batch_status : backend_->Forward(absl::MakeSpan(&items[i], 1));
    }
  }
  const Clock::time_point now = Clock::now();
  for (size_t i = 0; i < items.size(); ++i) {
    Sequence& seq = *fed[i];
    if (!results[i].ok()) {
      Fail(seq, results[i]);
      continue;
    }
    seq.num_fed += static_cast<int>(items[i].tokens.size());
    AfterFeed(seq, now, items[i].sample == nullptr ? std::nullopt : std::optional(*items[i].sample->token_out));
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(), [](const auto& s) { return s->done; }),
                 running_.end());
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.steps;
  }
  // Over budget: resident caches go first, then the youngest running sequences.
  EvictResidentUntil(0, std::string());
  while (running_.size() > 1 && HeldBytes() > options_.kv_budget_bytes) {
    auto youngest = std::max_element(running_.begin(), running_.end(),
                                     [](const auto& a, const auto& b) { return a->admission < b->admission; });
    std::unique_ptr<Sequence> seq = std::move(*youngest);
    running_.erase(youngest);
    Preempt(std::move(seq));
  }
}

void DecodeWorker::AfterFeed(Sequence& seq, Clock::time_point now, std::optional<int32_t> sampled) {
  if (seq.store != nullptr) {
    const std::vector<kvcache::Span>& spans = seq.cache->spans();
    for (int s = seq.num_spans_stored; s < static_cast<int>(spans.size()); ++s) {
      seq.store->PutAsync(seq.KeyOf(s), spans[s]);
    }
    seq.num_spans_stored = static_cast<int>(spans.size());
  }
  ReportSpans(seq);
  if (seq.num_fed < static_cast<int>(seq.tokens.size())) return;  // more prompt to go
  if (seq.prefill_done == Clock::time_point{}) seq.prefill_done = now;
  if (seq.handoff.prefill_only) {
    FinishPrefill(seq);
    return;
  }
  if (seq.state->finished()) {  // max_tokens = 0: the prefill was all
    Finish(seq);
    return;
  }
  absl::StatusOr<model::StepResult> r = sampled.has_value() ? seq.state->Accept(*sampled) : seq.state->Step(seq.logits);
  if (!r.ok()) {
    Fail(seq, r.status());
    return;
  }
  if (seq.first_token == Clock::time_point{}) seq.first_token = now;
  if (r->in_output) seq.tokens.push_back(r->token_id);
  if (r->in_output || !r->text.empty()) {
    seq.handoff.sink->OnTokens(r->in_output ? absl::MakeConstSpan(&r->token_id, 1) : absl::Span<const int32_t>(),
                               r->text);
  }
  if (r->finished) Finish(seq);
}

void DecodeWorker::FinishPrefill(Sequence& seq) {
  absl::StatusOr<model::DenseRows> rows = seq.cache->ExportDenseRows();
  if (!rows.ok()) {
    Fail(seq, rows.status());
    return;
  }
  SequencePrefilled p;
  p.rows = *std::move(rows);
  p.logits = std::move(seq.logits);
  p.num_spans = seq.num_spans_reported;
  p.store_prompt_tokens = seq.store_prompt_tokens;
  p.prefill_ms = seq.store_load_ms + MsBetween(seq.admitted, seq.prefill_done);
  seq.done = true;
  seq.cache.reset();
  PublishStats();
  seq.handoff.sink->OnPrefilled(std::move(p));
}

void DecodeWorker::Preempt(std::unique_ptr<Sequence> seq) {
  LOG(INFO) << "decode: preempting request " << seq->handoff.request_id << " at " << seq->num_fed
            << " tokens (KV budget)";
  seq->cache.reset();
  seq->num_fed = 0;
  seq->num_spans_stored = 0;
  ++seq->preemptions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.preemptions;
  }
  if (seq->store != nullptr) {
    Reload(std::move(seq));
  } else {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_front(std::move(seq));  // recomputes its tokens when memory frees up
  }
}

void DecodeWorker::Reload(std::unique_ptr<Sequence> seq) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++reloading_;
    reload_queue_.push_back(std::move(seq));
  }
  reload_cv_.notify_all();
}

void DecodeWorker::LoaderLoop() {
  while (true) {
    std::unique_ptr<Sequence> seq;
    {
      std::unique_lock<std::mutex> lock(mu_);
      reload_cv_.wait(lock, [&] { return stop_ || !reload_queue_.empty(); });
      if (stop_) return;
      seq = std::move(reload_queue_.front());
      reload_queue_.pop_front();
    }
    // Spans put moments ago (this sequence's own) must be visible before the lookup.
    seq->store->Flush();
    const int S = seq->handoff.policy->span_tokens();
    // At least one token stays to be fed: its logits continue the sequence.
    const int max_spans = (static_cast<int>(seq->tokens.size()) - 1) / S;
    prefill::LoadedPrefix loaded = seq->store->LoadPrefix(seq->tokens, max_spans);
    seq->store_load_ms += loaded.seconds * 1e3;
    seq->handoff.prefix = std::move(loaded.spans);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --reloading_;
      queue_.push_front(std::move(seq));
    }
    cv_.notify_all();
  }
}

void DecodeWorker::Finish(Sequence& seq) {
  const Clock::time_point now = Clock::now();
  SequenceFinished f;
  f.finish_reason = seq.state->finish_reason();
  f.prompt_tokens = seq.num_prompt;
  f.cached_prompt_tokens = seq.store_prompt_tokens + seq.resident_prompt_tokens;
  f.output_ids = seq.state->output_ids();
  f.completion_tokens = static_cast<int>(f.output_ids.size());
  f.text = seq.state->text();
  f.kv_bytes = seq.cache->memory_bytes();
  f.kv_bytes_per_token = seq.cache->num_tokens() > 0 ? static_cast<double>(f.kv_bytes) / seq.cache->num_tokens() : 0;
  f.queue_ms = std::max(0.0, MsBetween(seq.handoff.arrival, seq.admitted) - seq.handoff.store_load_ms);
  f.ttft_ms = seq.first_token == Clock::time_point{} ? 0 : MsBetween(seq.handoff.arrival, seq.first_token);
  f.prefill_ms = seq.store_load_ms + seq.shipped_prefill_ms + MsBetween(seq.admitted, seq.prefill_done);
  f.decode_ms = seq.first_token == Clock::time_point{} ? 0 : MsBetween(seq.first_token, now);
  f.store_load_ms = seq.store_load_ms;
  f.preemptions = seq.preemptions;
  seq.done = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.tokens_generated += f.completion_tokens;
    if (!seq.handoff.session_id.empty()) {
      Resident r;
      r.tokens.assign(seq.tokens.begin(), seq.tokens.begin() + seq.num_fed);
      r.cache = std::move(seq.cache);
      r.policy = seq.handoff.policy->canonical();
      r.last_use = step_counter_;
      AddResidentLocked(seq.handoff.session_id, std::move(r));
    }
  }
  seq.cache.reset();
  PublishStats();  // a client that hears the end sees the sequence gone
  seq.handoff.sink->OnFinished(f);
}

void DecodeWorker::Fail(Sequence& seq, const absl::Status& status) {
  LOG(INFO) << "decode: request " << seq.handoff.request_id << " ends: " << status;
  seq.done = true;
  seq.cache.reset();
  PublishStats();
  seq.handoff.sink->OnError(status);
}

void DecodeWorker::DropGone() {
  const Clock::time_point now = Clock::now();
  auto gone = [&](Sequence& seq) -> std::optional<absl::Status> {
    if (seq.handoff.sink->cancelled()) return absl::CancelledError("the client cancelled the request");
    if (now > seq.handoff.deadline) return absl::DeadlineExceededError("the request's deadline passed");
    return std::nullopt;
  };
  for (auto& seq : running_) {
    if (auto s = gone(*seq)) Fail(*seq, *s);
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(), [](const auto& s) { return s->done; }),
                 running_.end());
  std::vector<std::unique_ptr<Sequence>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (gone(**it)) {
        dropped.push_back(std::move(*it));
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& seq : dropped) Fail(*seq, *gone(*seq));
}

void DecodeWorker::PublishStats() {
  const int64_t running_bytes = RunningBytes();
  int64_t running_reserved = 0;
  for (const auto& seq : running_) {
    if (!seq->done) running_reserved += ReservedBytesOf(*seq);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_reserved_ = running_reserved;
    stats_.running = static_cast<int>(
        std::count_if(running_.begin(), running_.end(), [](const auto& seq) { return !seq->done; }));
    stats_.waiting = static_cast<int>(queue_.size()) + reloading_;
    running_bytes_ = running_bytes;
  }
  idle_cv_.notify_all();
}

}  // namespace kvspan::decode
