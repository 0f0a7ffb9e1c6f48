// The OpenAI-compatible routes on the node's HttpServer: POST /v1/completions,
// POST /v1/chat/completions (stream: false -> one JSON body; stream: true -> server-sent
// events ending in `data: [DONE]`), GET /v1/models. They translate with
// frontend/openai_api.h and run every call through ServingService::Run, the pipeline the
// gRPC Generate handler uses. Errors are OpenAI's error object with HttpStatusOf's code;
// an error after a stream has started is one `data: {"error": ...}` event before [DONE].
// A streaming client that disconnects cancels its sequence at the next write (the
// non-streaming body is written only at the end, so such a client is seen then).
//
// Thread-safe: handlers run on the HttpServer's threads; a streamed call runs on a thread
// of its own, joined when httplib releases the response.
#ifndef KVSPAN_FRONTEND_OPENAI_ROUTES_H_
#define KVSPAN_FRONTEND_OPENAI_ROUTES_H_

#include <atomic>
#include <chrono>
#include <string>

#include "frontend/api_keys.h"
#include "frontend/chat_template.h"
#include "frontend/http_server.h"
#include "frontend/serving_service.h"

namespace kvspan::frontend {

// The HTTP calls' part in the node's shutdown: once StopAccepting, new calls are refused
// (503, Unavailable); DrainUntil lets the running ones finish until a deadline and then
// cancels the rest, as the gRPC server does with its streams. Thread-safe.
class HttpCallDrain {
 public:
  // False once stopping (the call must not run); else the call counts until Exit.
  bool Enter();
  void Exit();
  bool cancelled() const { return cancelled_.load(); }
  void StopAccepting() { accepting_ = false; }
  // Waits until no call runs or `deadline` passed, then cancels what still runs.
  void DrainUntil(std::chrono::steady_clock::time_point deadline);

 private:
  std::atomic<bool> accepting_{true};
  std::atomic<bool> cancelled_{false};
  std::atomic<int> running_{0};
};

struct OpenAiRouteOptions {
  std::string model_name;                            // GET /v1/models' one id
  ChatTemplate chat_template = ChatTemplate::kPlain;  // for /v1/chat/completions
  HttpCallDrain* drain = nullptr;  // borrowed, outlives the server; null: never refused
  // Borrowed, outlives the server; null: no key needed. Else every route here needs
  // `Authorization: Bearer <key>` (401 with OpenAI's error object otherwise).
  const ApiKeys* api_keys = nullptr;
};

// Registers the routes. `service` is borrowed and must outlive the server's Stop.
// REQUIRES: before http.Start().
void AddOpenAiRoutes(HttpServer& http, ServingService& service, const OpenAiRouteOptions& options);

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_OPENAI_ROUTES_H_
