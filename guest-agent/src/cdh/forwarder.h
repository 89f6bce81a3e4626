// Every other Confidential Data Hub service on cdh.sock, forwarded to the
// real CDH on another socket: our agent owns kata-agent's CDH socket for
// SecureMount, but kata-agent also sends sealed secrets, GetResource, image
// pulls and key-provider calls there, and those must keep working.
//
// Forwarding is byte-for-byte: service, method, the payload bytes and the
// metadata go upstream unchanged with the caller's remaining deadline as
// timeout_nano; the upstream's payload bytes and status (code and message)
// come back unchanged. Nothing is decoded, so a CDH service added upstream
// later is forwarded too. api.SecureMountService is never forwarded.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "cocostorage/common/status.h"
#include "cocostorage/ttrpc/client.h"
#include "cocostorage/ttrpc/server.h"

namespace cocostorage::agent {

// Where the real CDH listens once cdh.sock is ours (its cdh.toml `socket`,
// deploy/guest/cdh.toml). The CDH key provider uses the same socket.
inline constexpr char kCdhUpstreamSocket[] = "/run/confidential-containers/cdh-upstream.sock";

struct ForwarderOptions {
  // The real CDH's ttrpc socket; "" = no CDH behind us (every forwarded
  // call is UNAVAILABLE).
  std::string upstream_socket = kCdhUpstreamSocket;
  // Used when the caller sent no timeout_nano (kata-agent always sends one),
  // so that no forwarded call can wait forever.
  std::chrono::nanoseconds no_deadline_timeout = std::chrono::minutes(10);
};

class CdhForwarder {
 public:
  explicit CdhForwarder(ForwarderOptions options) : options_(std::move(options)) {}
  CdhForwarder(const CdhForwarder&) = delete;
  CdhForwarder& operator=(const CdhForwarder&) = delete;

  // Takes every call to a service `server` has no handler for.
  void Register(ttrpc::Server& server);

  // The fallback handler (public for tests).
  Status Forward(const ttrpc::CallContext& ctx, const std::string& request, std::string* response);

 private:
  // The shared upstream connection, dialled when there is none or the last
  // one broke. Dialling under the lock: concurrent callers after an upstream
  // restart wait for one dial instead of racing many.
  StatusOr<std::shared_ptr<ttrpc::Client>> Connection();
  void Drop(const std::shared_ptr<ttrpc::Client>& broken);
  Status Unreachable(const std::string& why) const;

  const ForwarderOptions options_;
  std::mutex mu_;
  std::shared_ptr<ttrpc::Client> client_;
};

}  // namespace cocostorage::agent
