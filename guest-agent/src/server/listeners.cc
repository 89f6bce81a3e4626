#include "server/listeners.h"

#include <grpcpp/server_posix.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <regex>

#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::agent {

StatusOr<ListenAddress> ParseListenAddress(const std::string& uri) {
  ListenAddress a;
  std::smatch m;
  if (std::regex_match(uri, m, std::regex("tcp://([^/]+:[0-9]{1,5})"))) {
    a.kind = ListenAddress::Kind::kTcp;
    a.address = m[1];
    return a;
  }
  if (std::regex_match(uri, m, std::regex("unix://(/.+)"))) {
    a.kind = ListenAddress::Kind::kUnix;
    a.address = m[1];
    return a;
  }
  if (std::regex_match(uri, m, std::regex("vsock://([0-9]{1,10})"))) {
    a.kind = ListenAddress::Kind::kVsock;
    a.vsock_port = static_cast<unsigned>(std::stoul(m[1]));
    return a;
  }
  return absl::InvalidArgumentError(
      Cat("listen address \"", uri, "\" is not tcp://HOST:PORT, unix:///PATH or vsock://PORT"));
}

VsockAcceptor::~VsockAcceptor() { Stop(); }

StatusOr<std::unique_ptr<VsockAcceptor>> VsockAcceptor::Listen(unsigned port) {
  auto acc = std::unique_ptr<VsockAcceptor>(new VsockAcceptor());
  acc->listen_fd_.Reset(socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!acc->listen_fd_.valid()) return ErrnoStatus(errno, "vsock socket (is vmw_vsock_virtio_transport loaded?)");
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = VMADDR_CID_ANY;
  addr.svm_port = port;
  if (bind(acc->listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(errno, Cat("binding vsock port ", port));
  }
  if (listen(acc->listen_fd_.get(), 64) != 0) return ErrnoStatus(errno, "vsock listen");
  return acc;
}

void VsockAcceptor::Start(grpc::Server* server) {
  thread_ = std::thread([this, server] {
    while (!stop_) {
      pollfd p{listen_fd_.get(), POLLIN, 0};
      int n = poll(&p, 1, 200);
      if (n <= 0) continue;
      int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) continue;
      // gRPC takes ownership of the fd.
      grpc::AddInsecureChannelFromFd(server, fd);
    }
  });
}

void VsockAcceptor::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

}  // namespace cocostorage::agent
