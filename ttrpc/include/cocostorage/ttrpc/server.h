// A ttrpc server on a unix socket: unary calls, many concurrent streams per
// connection (each request runs on its own thread), the request's
// timeout_nano as its deadline, cancellation when the client goes away.
// Status codes as the reference servers use them: unknown service or method
// UNIMPLEMENTED (unless a fallback takes every other service), a payload
// over 4 MiB RESOURCE_EXHAUSTED, an even stream id or an undecodable request
// INVALID_ARGUMENT.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cocostorage/common/status.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::ttrpc {

struct CallContext {
  std::string service;
  std::string method;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::vector<std::pair<std::string, std::string>> metadata;
  // True once the client went away or the deadline passed.
  std::function<bool()> cancelled;
};

// A Request frame's payload decoded (pure; the server's first step of every
// call): service, method, metadata, the payload, and the deadline from
// timeout_nano counted from `now` (none when it is 0 or negative).
// INVALID_ARGUMENT when the bytes are not a ttrpc Request.
struct DecodedRequest {
  CallContext ctx;  // without `cancelled`
  std::string payload;
};
StatusOr<DecodedRequest> DecodeRequest(const std::string& bytes, std::chrono::steady_clock::time_point now);

// `request` and `*response` are the protobuf payload bytes of the call.
using Handler = std::function<Status(const CallContext& ctx, const std::string& request, std::string* response)>;

class Server {
 public:
  Server() = default;
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Before Start().
  void Register(const std::string& service, const std::string& method, Handler handler);
  // Takes every call to a service nothing registered (e.g. forwarding).
  void SetFallback(Handler handler);
  // Concurrent calls per connection; more are answered RESOURCE_EXHAUSTED.
  void SetMaxConcurrentCalls(int n) { max_calls_ = n; }

  // Binds and listens; replaces a stale socket file, never a live one
  // (FAILED_PRECONDITION) or anything that is not a socket.
  Status ListenUnix(const std::string& path, unsigned mode = 0600);
  void Start();
  // Stops accepting, closes every connection (in-flight calls see
  // cancelled()), waits for all handlers.
  void Stop();

 private:
  struct Connection;
  void AcceptLoop();
  void Serve(std::shared_ptr<Connection> conn);
  void Dispatch(const std::shared_ptr<Connection>& conn, uint32_t stream_id, std::string request_bytes);

  std::map<std::pair<std::string, std::string>, Handler> handlers_;
  Handler fallback_;
  int max_calls_ = 128;
  UniqueFd listen_fd_;
  std::string path_;
  ino_t socket_ino_ = 0;  // what we bound, so Stop() removes only our own file
  dev_t socket_dev_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::mutex mu_;
  struct Slot {
    std::shared_ptr<Connection> conn;
    std::thread thread;
  };
  std::vector<Slot> connections_;  // finished ones are pruned at the next accept
};

}  // namespace cocostorage::ttrpc
