#include "prefill/prefill_worker.h"

#include "common/logging.h"

namespace kvspan::prefill {

PrefillWorker::PrefillWorker(std::shared_ptr<StoreRouter> stores, transport::SpanTransport* transport,
                             int num_threads)
    : stores_(std::move(stores)), transport_(transport) {
  for (int i = 0; i < std::max(1, num_threads); ++i) threads_.emplace_back([this] { Run(); });
}

PrefillWorker::~PrefillWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void PrefillWorker::Submit(decode::SequenceHandoff handoff) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(handoff));
  }
  cv_.notify_one();
}

int PrefillWorker::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size()) + in_flight_;
}

void PrefillWorker::Load(decode::SequenceHandoff& handoff) {
  if (handoff.use_resident || stores_ == nullptr) return;
  std::shared_ptr<SpanStore> store = stores_->For(*handoff.policy, handoff.tenant);
  if (store == nullptr) return;
  // At least one prompt token stays to be computed: its logits give the first token.
  const int max_spans = (static_cast<int>(handoff.tokens.size()) - 1) / handoff.policy->span_tokens();
  if (max_spans <= 0) return;
  LoadedPrefix loaded = store->LoadPrefix(handoff.tokens, max_spans);
  handoff.prefix = std::move(loaded.spans);
  handoff.store_load_ms = loaded.seconds * 1e3;
}

void PrefillWorker::Run() {
  while (true) {
    decode::SequenceHandoff handoff;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and drained
      handoff = std::move(queue_.front());
      queue_.pop_front();
      ++in_flight_;
    }
    Load(handoff);
    std::shared_ptr<decode::TokenSink> sink = handoff.sink;
    if (absl::Status s = transport_->Send(std::move(handoff)); !s.ok()) sink->OnError(s);
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
  }
}

}  // namespace kvspan::prefill
