// Minimal QMP (QEMU Machine Protocol) client over a unix socket.
//
//   COCO_ASSIGN_OR_RETURN(auto qmp, QmpClient::Connect("/tmp/x/qmp.sock", 10s));
//   COCO_ASSIGN_OR_RETURN(nlohmann::json r, qmp->Execute("query-status"));
//   COCO_ASSIGN_OR_RETURN(auto ev, qmp->WaitEvent("DEVICE_DELETED",
//       [](const nlohmann::json& data) { return data.value("device", "") == "vol1"; }, 30s));
//
// Thread-safe (one mutex); events that arrive while waiting for a command
// reply are queued and seen by later WaitEvent calls.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "cocostorage/common/status.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::vmtest {

class QmpClient {
 public:
  using EventFilter = std::function<bool(const nlohmann::json& data)>;

  // Connects (retrying until the socket exists or `timeout` passes), reads the
  // greeting and negotiates capabilities.
  static StatusOr<std::unique_ptr<QmpClient>> Connect(const std::string& socket_path,
                                                      std::chrono::milliseconds timeout);

  // Runs a command; returns its "return" value, or a Status carrying the QMP
  // error class and description ("GenericError: Duplicate node name").
  StatusOr<nlohmann::json> Execute(const std::string& command, const nlohmann::json& arguments = nlohmann::json(),
                                   std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // Waits for an event named `name` whose "data" satisfies `filter` (any when
  // null). Returns the whole event object. Earlier non-matching events stay queued.
  StatusOr<nlohmann::json> WaitEvent(const std::string& name, const EventFilter& filter,
                                     std::chrono::milliseconds timeout);

  // Drops queued events (e.g. before starting an operation).
  void ClearEvents();

 private:
  explicit QmpClient(UniqueFd fd) : fd_(std::move(fd)) {}
  // Reads one JSON message (one line). Caller holds mu_.
  StatusOr<nlohmann::json> ReadMessageLocked(std::chrono::steady_clock::time_point deadline);
  Status WriteLocked(const std::string& line);

  std::mutex mu_;
  UniqueFd fd_;
  std::string buffer_;
  std::deque<nlohmann::json> events_;
  int next_id_ = 1;
};

}  // namespace cocostorage::vmtest
