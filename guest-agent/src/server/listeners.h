// Listening endpoints: tcp://HOST:PORT, unix:///PATH, vsock://PORT.
// gRPC 1.51 has no vsock scheme, so vsock connections are accepted here and
// handed to the server as file descriptors.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cocostorage/common/status.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::agent {

struct ListenAddress {
  enum class Kind { kTcp, kUnix, kVsock } kind = Kind::kTcp;
  std::string address;  // "0.0.0.0:7001", "/run/agent.sock"
  unsigned vsock_port = 0;
};
StatusOr<ListenAddress> ParseListenAddress(const std::string& uri);

class VsockAcceptor {
 public:
  ~VsockAcceptor();
  static StatusOr<std::unique_ptr<VsockAcceptor>> Listen(unsigned port);
  // Starts accepting and handing connections to `server`.
  void Start(grpc::Server* server);
  void Stop();

 private:
  UniqueFd listen_fd_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace cocostorage::agent
