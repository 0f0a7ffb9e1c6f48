#include "frontend/openai_routes.h"

#include <chrono>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "frontend/openai_api.h"

namespace kvspan::frontend {
namespace {

constexpr char kJson[] = "application/json";

void SendError(httplib::Response& response, const absl::Status& status) {
  response.status = HttpStatusOf(status.code());
  response.set_content(ErrorJson(status), kJson);
  if (status.code() == absl::StatusCode::kUnauthenticated) response.set_header("WWW-Authenticate", "Bearer");
}

// OK when no key is needed or the request's Authorization header carries one.
absl::Status CheckKey(const ApiKeys* keys, const httplib::Request& request) {
  if (keys == nullptr) return absl::OkStatus();
  return keys->CheckAuthorization(request.get_header_value("Authorization"));
}

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

// A streamed call: ServingService::Run on a thread of its own writes messages here; the
// handler waits for the first one (an error before it is a plain error response) and
// httplib's content provider drains the rest. Thread-safe.
class StreamedCall {
 public:
  struct Item {
    std::optional<v1::GenerateResponse> message;
    std::optional<absl::Status> end;
  };

  ~StreamedCall() {
    Cancel();
    if (runner_.joinable()) runner_.join();
  }

  // Runs the call; `drain` (may be null) has been entered and is exited at the end.
  void Start(ServingService& service, v1::GenerateRequest request, HttpCallDrain* drain) {
    runner_ = std::thread([this, &service, request = std::move(request), drain] {
      GenerateHooks hooks;
      hooks.cancelled = [this, drain] { return cancelled() || (drain != nullptr && drain->cancelled()); };
      hooks.write = [this](const v1::GenerateResponse& m) { return Push({m, std::nullopt}); };
      const absl::Status end = service.Run(request, hooks);
      if (drain != nullptr) drain->Exit();
      Push({std::nullopt, end});
    });
  }
  // The next item, waiting up to `timeout`.
  std::optional<Item> Next(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !items_.empty(); })) return std::nullopt;
    Item item = std::move(items_.front());
    items_.pop_front();
    return item;
  }
  // The client went away: Run cancels the sequence.
  void Cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
  }

 private:
  bool cancelled() {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }
  bool Push(Item item) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cancelled_ && item.message.has_value()) return false;
      items_.push_back(std::move(item));
    }
    cv_.notify_one();
    return true;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> items_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::thread runner_;
};

// Writes the stream from the Started message `started` on; false when the client went away.
bool WriteStream(StreamedCall& call, const OpenAiRequest& request, const v1::Started& started,
                 const std::string& model_name, httplib::DataSink& sink) {
  CallOutcome outcome;
  outcome.started = started;
  const ResponseIdentity identity = MakeResponseIdentity(request.endpoint, started, model_name, Now());
  auto write = [&](const std::string& event) {
    if (sink.write(event.data(), event.size())) return true;
    call.Cancel();
    return false;
  };
  // The chat stream opens with the assistant's role, as OpenAI's does.
  if (request.endpoint == OpenAiEndpoint::kChatCompletions &&
      !write(StreamRoleEvent(identity))) {
    return false;
  }
  while (true) {
    std::optional<StreamedCall::Item> item = call.Next(std::chrono::milliseconds(50));
    if (!item.has_value()) continue;
    if (item->message.has_value() && item->message->has_tokens() && !item->message->tokens().text().empty()) {
      if (!write(StreamTextEvent(request.endpoint, identity, item->message->tokens().text()))) {
        return false;
      }
    }
    if (item->message.has_value() && item->message->has_finished()) outcome.finished = item->message->finished();
    if (!item->end.has_value()) continue;
    if (item->end->ok()) {
      if (!write(StreamFinishEvent(request.endpoint, identity, outcome.finished))) return false;
      if (request.include_usage && !write(StreamUsageEvent(request.endpoint, identity, outcome))) return false;
    } else if (!write(absl::StrCat("data: ", ErrorJson(*item->end), "\n\n"))) {
      return false;
    }
    if (!write(StreamDoneEvent())) return false;
    sink.done();
    return true;
  }
}

void Stream(ServingService& service, const std::string& model_name, const OpenAiRequest& request,
            HttpCallDrain* drain, httplib::Response& response) {
  auto call = std::make_shared<StreamedCall>();
  call->Start(service, request.generate, drain);
  std::optional<StreamedCall::Item> first;
  while (!first.has_value()) first = call->Next(std::chrono::milliseconds(50));
  if (first->end.has_value()) {  // refused before it started: a plain error response
    SendError(response, first->end->ok() ? absl::InternalError("the call ended before it started") : *first->end);
    return;
  }
  const v1::Started started = first->message->started();
  response.set_header("Cache-Control", "no-cache");
  response.set_chunked_content_provider(
      "text/event-stream",
      [call, request, started, model_name](size_t, httplib::DataSink& sink) {
        return WriteStream(*call, request, started, model_name, sink);
      },
      [call](bool) { call->Cancel(); });  // the last reference goes with httplib's copy: joins
}

void Complete(ServingService& service, const std::string& model_name, const OpenAiRequest& request,
              HttpCallDrain* drain, httplib::Response& response) {
  CallOutcome outcome;
  GenerateHooks hooks;
  if (drain != nullptr) hooks.cancelled = [drain] { return drain->cancelled(); };
  hooks.write = [&outcome](const v1::GenerateResponse& m) {
    if (m.has_started()) outcome.started = m.started();
    if (m.has_tokens()) outcome.text += m.tokens().text();
    if (m.has_finished()) outcome.finished = m.finished();
    return true;
  };
  const absl::Status status = service.Run(request.generate, hooks);
  if (drain != nullptr) drain->Exit();
  if (!status.ok()) return SendError(response, status);
  const ResponseIdentity identity = MakeResponseIdentity(request.endpoint, outcome.started, model_name, Now());
  response.set_content(CompletionResponseJson(request.endpoint, identity, outcome), kJson);
}

}  // namespace

bool HttpCallDrain::Enter() {
  running_.fetch_add(1);
  if (accepting_.load()) return true;
  running_.fetch_sub(1);
  return false;
}

void HttpCallDrain::Exit() { running_.fetch_sub(1); }

void HttpCallDrain::DrainUntil(std::chrono::steady_clock::time_point deadline) {
  accepting_ = false;
  while (running_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  cancelled_ = true;
}

void AddOpenAiRoutes(HttpServer& http, ServingService& service, const OpenAiRouteOptions& options) {
  for (OpenAiEndpoint endpoint : {OpenAiEndpoint::kCompletions, OpenAiEndpoint::kChatCompletions}) {
    const char* path = endpoint == OpenAiEndpoint::kCompletions ? "/v1/completions" : "/v1/chat/completions";
    http.Post(path, [&service, options, endpoint](const httplib::Request& request, httplib::Response& response) {
      if (absl::Status auth = CheckKey(options.api_keys, request); !auth.ok()) return SendError(response, auth);
      const OpenAiParseContext context{.model_name = options.model_name,
                                       .chat_template = options.chat_template,
                                       .session_header = request.get_header_value("X-Session-Id")};
      absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, request.body, context);
      if (!parsed.ok()) return SendError(response, parsed.status());
      if (options.drain != nullptr && !options.drain->Enter()) {
        return SendError(response, absl::UnavailableError("the server is shutting down"));
      }
      if (parsed->stream) return Stream(service, options.model_name, *parsed, options.drain, response);
      Complete(service, options.model_name, *parsed, options.drain, response);
    });
  }
  const int64_t created = Now();
  http.Get("/v1/models", [options, created](const httplib::Request& request, httplib::Response& response) {
    if (absl::Status auth = CheckKey(options.api_keys, request); !auth.ok()) return SendError(response, auth);
    response.set_content(ModelListJson(options.model_name, created), kJson);
  });
}

}  // namespace kvspan::frontend
