#include "cocostorage/ttrpc/server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/ttrpc/frame.h"
#include "ttrpc/ttrpc.pb.h"

namespace cocostorage::ttrpc {

struct Server::Connection {
  explicit Connection(int raw_fd) : fd(raw_fd) {}
  UniqueFd fd;
  std::mutex write_mu;
  std::atomic<bool> closed{false};
  std::atomic<bool> finished{false};
  std::mutex mu;
  std::condition_variable cv;
  int active = 0;  // calls running
};

namespace {

std::string ResponseBytes(const Status& s, const std::string& payload) {
  ::ttrpc::Response resp;
  resp.mutable_status()->set_code(static_cast<int>(s.code()));
  resp.mutable_status()->set_message(std::string(s.message()));
  if (s.ok()) resp.set_payload(payload);
  std::string out;
  resp.SerializeToString(&out);
  return out;
}

}  // namespace

Server::~Server() { Stop(); }

void Server::Register(const std::string& service, const std::string& method, Handler handler) {
  handlers_[{service, method}] = std::move(handler);
}

void Server::SetFallback(Handler handler) { fallback_ = std::move(handler); }

Status Server::ListenUnix(const std::string& path, unsigned mode) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path))
    return absl::InvalidArgumentError(Cat("socket path ", path, " is too long"));
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, path.size());
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return absl::FailedPreconditionError(Cat(path, " exists and is not a socket"));
    // Replace a stale socket, never a live one: another server (the real
    // CDH, a second agent) still accepting there keeps it.
    UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.valid() && connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      return absl::FailedPreconditionError(Cat(path, " is in use by another server"));
    }
    COCO_RETURN_IF_ERROR(RemoveFileIfExists(path));
  }
  listen_fd_.Reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listen_fd_.valid()) return ErrnoStatus(errno, "ttrpc: socket");
  if (bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(errno, Cat("ttrpc: binding ", path));
  }
  if (chmod(path.c_str(), mode) != 0) return ErrnoStatus(errno, Cat("ttrpc: chmod ", path));
  if (lstat(path.c_str(), &st) != 0) return ErrnoStatus(errno, Cat("ttrpc: stat ", path));
  socket_ino_ = st.st_ino;
  socket_dev_ = st.st_dev;
  if (listen(listen_fd_.get(), 64) != 0) return ErrnoStatus(errno, "ttrpc: listen");
  path_ = path;
  return OkStatus();
}

void Server::Start() {
  stopping_ = false;
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

void Server::AcceptLoop() {
  while (!stopping_) {
    pollfd p{listen_fd_.get(), POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    auto conn = std::make_shared<Connection>(fd);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (it->conn->finished) {
        it->thread.join();
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
    connections_.push_back({conn, std::thread([this, conn] { Serve(conn); })});
  }
}

void Server::Serve(std::shared_ptr<Connection> conn) {
  while (!stopping_) {
    auto frame = ReadFrame(conn->fd.get());
    if (!frame.ok()) break;  // the client left (or the stream broke): stop reading
    const uint32_t id = frame->header.stream_id;
    auto reply_now = [&](const Status& s) {
      std::lock_guard<std::mutex> w(conn->write_mu);
      return WriteFrame(conn->fd.get(), id, kResponse, ResponseBytes(s, "")).ok();
    };
    if (!frame->oversize.ok()) {
      if (!reply_now(frame->oversize)) break;
      continue;
    }
    if (frame->header.type != kRequest) continue;  // ignored, for future compatibility
    if (id % 2 != 1) {
      if (!reply_now(absl::InvalidArgumentError("StreamID must be odd for client initiated streams"))) break;
      continue;
    }
    {
      std::unique_lock<std::mutex> lock(conn->mu);
      if (conn->active >= max_calls_) {
        lock.unlock();
        if (!reply_now(absl::ResourceExhaustedError(Cat("more than ", max_calls_, " calls in flight")))) break;
        continue;
      }
      ++conn->active;
    }
    // Each call on its own thread: one slow call must not hold up the other
    // streams of the connection. The thread keeps the connection alive.
    std::thread([this, conn, id, bytes = std::move(frame->payload)]() mutable {
      Dispatch(conn, id, std::move(bytes));
      std::lock_guard<std::mutex> lock(conn->mu);
      --conn->active;
      conn->cv.notify_all();
    }).detach();
  }
  conn->closed = true;
  // In-flight handlers now see cancelled(); wait for them before the
  // connection (and this server) may go away.
  std::unique_lock<std::mutex> lock(conn->mu);
  conn->cv.wait(lock, [&] { return conn->active == 0; });
  conn->finished = true;
}

StatusOr<DecodedRequest> DecodeRequest(const std::string& bytes, std::chrono::steady_clock::time_point now) {
  ::ttrpc::Request req;
  if (!req.ParseFromString(bytes)) return absl::InvalidArgumentError("unmarshal request error: not a ttrpc Request");
  DecodedRequest out;
  out.ctx.service = req.service();
  out.ctx.method = req.method();
  if (req.timeout_nano() > 0) {
    // A timeout beyond what the clock can represent is no deadline (not an
    // overflow into the past).
    const std::chrono::nanoseconds timeout(req.timeout_nano());
    if (timeout < std::chrono::steady_clock::time_point::max() - now) out.ctx.deadline = now + timeout;
  }
  for (const auto& kv : req.metadata()) out.ctx.metadata.emplace_back(kv.key(), kv.value());
  out.payload = std::move(*req.mutable_payload());
  return out;
}

void Server::Dispatch(const std::shared_ptr<Connection>& conn, uint32_t stream_id, std::string request_bytes) {
  std::string response;
  Status status;
  auto decoded = DecodeRequest(request_bytes, std::chrono::steady_clock::now());
  if (!decoded.ok()) {
    status = decoded.status();
  } else {
    CallContext& ctx = decoded->ctx;
    const std::string& payload = decoded->payload;
    const auto deadline = ctx.deadline;
    ctx.cancelled = [conn, deadline] { return conn->closed.load() || std::chrono::steady_clock::now() >= deadline; };
    auto it = handlers_.find({ctx.service, ctx.method});
    if (it != handlers_.end()) {
      status = it->second(ctx, payload, &response);
    } else {
      // handlers_ is ordered by (service, method): the first key not below
      // (service, "") tells whether the service is ours at all.
      auto first = handlers_.lower_bound({ctx.service, ""});
      const bool known_service = first != handlers_.end() && first->first.first == ctx.service;
      if (known_service) {
        status = absl::UnimplementedError(Cat("method ", ctx.method));
      } else if (fallback_) {
        status = fallback_(ctx, payload, &response);
      } else {
        status = absl::UnimplementedError(Cat("service ", ctx.service));
      }
    }
    if (status.ok() && std::chrono::steady_clock::now() >= ctx.deadline) {
      status = absl::DeadlineExceededError("ttrpc: the call's deadline passed");
    }
  }
  if (conn->closed) return;  // nobody to answer
  std::lock_guard<std::mutex> w(conn->write_mu);
  Status sent = WriteFrame(conn->fd.get(), stream_id, kResponse, ResponseBytes(status, response));
  if (!sent.ok()) log::Debug("ttrpc.reply_failed", {{"stream", stream_id}, {"error", std::string(sent.message())}});
}

void Server::Stop() {
  if (stopping_.exchange(true) && !accept_thread_.joinable()) return;
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<Slot> slots;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : connections_) shutdown(c.conn->fd.get(), SHUT_RDWR);
    slots.swap(connections_);
  }
  for (auto& slot : slots) slot.thread.join();
  std::lock_guard<std::mutex> lock(mu_);
  listen_fd_.Reset();
  // Remove the socket file only if it is still the one this server bound.
  struct stat st {};
  if (!path_.empty() && lstat(path_.c_str(), &st) == 0 && st.st_ino == socket_ino_ && st.st_dev == socket_dev_) {
    (void)RemoveFileIfExists(path_);
  }
  path_.clear();
}

}  // namespace cocostorage::ttrpc
