#include "frontend/grpc_token_sink.h"

namespace kvspan::frontend {

v1::FinishReason ToProto(model::FinishReason reason) {
  switch (reason) {
    case model::FinishReason::kStopToken: return v1::FINISH_REASON_STOP_TOKEN;
    case model::FinishReason::kStopString: return v1::FINISH_REASON_STOP_STRING;
    case model::FinishReason::kMaxTokens: return v1::FINISH_REASON_MAX_TOKENS;
    case model::FinishReason::kContextFull: return v1::FINISH_REASON_CONTEXT_FULL;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void GrpcTokenSink::Push(Event event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(event));
  }
  cv_.notify_one();
}

void GrpcTokenSink::OnStarted(const decode::SequenceStarted& s) {
  Event e;
  v1::Started* m = e.message.emplace().mutable_started();
  m->set_request_id(s.request_id);
  m->set_session_id(s.session_id);
  m->set_policy(s.policy);
  m->set_prompt_tokens(s.prompt_tokens);
  m->set_store_prompt_tokens(s.store_prompt_tokens);
  m->set_resident_prompt_tokens(s.resident_prompt_tokens);
  m->set_computed_prompt_tokens(s.computed_prompt_tokens);
  e.started = s;
  Push(std::move(e));
}

void GrpcTokenSink::OnTokens(absl::Span<const int32_t> ids, absl::string_view text) {
  Event e;
  v1::Tokens* m = e.message.emplace().mutable_tokens();
  for (int32_t id : ids) m->add_ids(id);
  m->set_text(std::string(text));
  Push(std::move(e));
}

void GrpcTokenSink::OnFinished(const decode::SequenceFinished& f) {
  Event e;
  v1::Finished* m = e.message.emplace().mutable_finished();
  m->set_finish_reason(ToProto(f.finish_reason));
  m->mutable_usage()->set_prompt_tokens(f.prompt_tokens);
  m->mutable_usage()->set_cached_prompt_tokens(f.cached_prompt_tokens);
  m->mutable_usage()->set_completion_tokens(f.completion_tokens);
  m->set_kv_bytes(f.kv_bytes);
  m->set_kv_bytes_per_token(f.kv_bytes_per_token);
  v1::Timings* t = m->mutable_timings();
  t->set_queue_ms(f.queue_ms);
  t->set_ttft_ms(f.ttft_ms);
  t->set_prefill_ms(f.prefill_ms);
  t->set_decode_ms(f.decode_ms);
  t->set_store_load_ms(f.store_load_ms);
  m->set_preemptions(f.preemptions);
  m->set_text(f.text);
  e.end = absl::OkStatus();
  e.finished = f;
  Push(std::move(e));
}

void GrpcTokenSink::OnError(const absl::Status& status) {
  Event e;
  e.end = status;
  Push(std::move(e));
}

std::optional<GrpcTokenSink::Event> GrpcTokenSink::Next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  Event e = std::move(events_.front());
  events_.pop_front();
  return e;
}

model::FinishReason FromProto(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP_TOKEN: return model::FinishReason::kStopToken;
    case v1::FINISH_REASON_STOP_STRING: return model::FinishReason::kStopString;
    case v1::FINISH_REASON_CONTEXT_FULL: return model::FinishReason::kContextFull;
    default: return model::FinishReason::kMaxTokens;
  }
}

void GrpcTokenSink::OnRemoteMessage(const v1::GenerateResponse& message) {
  Event e;
  e.message = message;
  if (message.has_started()) {
    const v1::Started& m = message.started();
    decode::SequenceStarted& s = e.started.emplace();
    s.request_id = m.request_id();
    s.session_id = m.session_id();
    s.policy = m.policy();
    s.prompt_tokens = m.prompt_tokens();
    s.store_prompt_tokens = m.store_prompt_tokens();
    s.resident_prompt_tokens = m.resident_prompt_tokens();
    s.computed_prompt_tokens = m.computed_prompt_tokens();
  } else if (message.has_tokens()) {
    std::lock_guard<std::mutex> lock(mu_);
    remote_ids_.insert(remote_ids_.end(), message.tokens().ids().begin(), message.tokens().ids().end());
  } else if (message.has_finished()) {
    const v1::Finished& m = message.finished();
    decode::SequenceFinished& f = e.finished.emplace();
    f.finish_reason = FromProto(m.finish_reason());
    f.prompt_tokens = m.usage().prompt_tokens();
    f.cached_prompt_tokens = m.usage().cached_prompt_tokens();
    f.completion_tokens = m.usage().completion_tokens();
    {
      std::lock_guard<std::mutex> lock(mu_);
      f.output_ids = remote_ids_;
    }
    f.text = m.text();
    f.kv_bytes = m.kv_bytes();
    f.kv_bytes_per_token = m.kv_bytes_per_token();
    f.queue_ms = m.timings().queue_ms();
    f.ttft_ms = m.timings().ttft_ms();
    f.prefill_ms = m.timings().prefill_ms();
    f.decode_ms = m.timings().decode_ms();
    f.store_load_ms = m.timings().store_load_ms();
    f.preemptions = m.preemptions();
    e.end = absl::OkStatus();
  }
  Push(std::move(e));
}

absl::Status RelayToClient(GrpcTokenSink& sink, const std::function<bool()>& cancelled,
                           const std::function<bool(const v1::GenerateResponse&)>& write,
                           const std::function<void(GrpcTokenSink::Event&)>& on_event) {
  bool client_gone = false;
  while (true) {
    std::optional<GrpcTokenSink::Event> event = sink.Next(std::chrono::milliseconds(50));
    if (!event.has_value()) {
      if (cancelled != nullptr && cancelled()) {
        client_gone = true;
        sink.Cancel();  // the worker ends it with Cancelled
      }
      continue;
    }
    if (on_event != nullptr) on_event(*event);
    if (event->message.has_value() && !client_gone && !write(*event->message)) {
      client_gone = true;
      sink.Cancel();  // the client is gone; wait for the worker to let go
      if (!event->end.has_value()) continue;
    }
    if (event->end.has_value()) {
      if (event->end->ok() && (client_gone || (cancelled != nullptr && cancelled()))) {
        return absl::CancelledError("the client went away");
      }
      return *event->end;
    }
  }
}

}  // namespace kvspan::frontend
