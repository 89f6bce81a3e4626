// A ttrpc client on a unix socket: one connection, odd stream ids, many
// calls in flight at once (a reader thread routes responses by stream id).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cocostorage/common/status.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::ttrpc {

class Client {
 public:
  static StatusOr<std::unique_ptr<Client>> ConnectUnix(const std::string& path);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // How a call ended, for callers that re-dial or retry (a forwarder): a
  // call that was never sent may be retried on a new connection, one that
  // was sent may not (the server may have acted on it).
  struct Outcome {
    bool sent = false;      // the whole request frame was written
    bool answered = false;  // the server's Response arrived: the status is the server's own
  };

  // One unary call: `request` is the protobuf payload; the timeout is sent as
  // timeout_nano and also bounds the wait here (DEADLINE_EXCEEDED). The
  // server's status comes back as is; UNAVAILABLE when the connection drops.
  StatusOr<std::string> Call(const std::string& service, const std::string& method, const std::string& request,
                             std::chrono::nanoseconds timeout,
                             const std::vector<std::pair<std::string, std::string>>& metadata = {},
                             Outcome* outcome = nullptr);

  // True once the connection is gone (read EOF/error or a failed write):
  // every further call fails without being sent; dial a new Client.
  bool Broken() const;

 private:
  explicit Client(UniqueFd fd);
  void ReadLoop();

  struct Pending {
    bool done = false;
    bool answered = false;  // a Response frame (not a lost connection) ended it
    Status status;
    std::string payload;
  };
  UniqueFd fd_;
  std::mutex write_mu_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint32_t, Pending> pending_;
  uint32_t next_stream_ = 1;
  bool broken_ = false;
  std::thread reader_;
};

}  // namespace cocostorage::ttrpc
