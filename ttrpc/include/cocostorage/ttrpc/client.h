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

  // One unary call: `request` is the protobuf payload; the timeout is sent as
  // timeout_nano and also bounds the wait here (DEADLINE_EXCEEDED). The
  // server's status comes back as is; UNAVAILABLE when the connection drops.
  StatusOr<std::string> Call(const std::string& service, const std::string& method, const std::string& request,
                             std::chrono::nanoseconds timeout,
                             const std::vector<std::pair<std::string, std::string>>& metadata = {});

 private:
  explicit Client(UniqueFd fd);
  void ReadLoop();

  struct Pending {
    bool done = false;
    Status status;
    std::string payload;
  };
  UniqueFd fd_;
  std::mutex write_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint32_t, Pending> pending_;
  uint32_t next_stream_ = 1;
  bool broken_ = false;
  std::thread reader_;
};

}  // namespace cocostorage::ttrpc
