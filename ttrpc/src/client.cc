#include "cocostorage/ttrpc/client.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>

#include "cocostorage/common/strings.h"
#include "cocostorage/ttrpc/frame.h"
#include "ttrpc/ttrpc.pb.h"

namespace cocostorage::ttrpc {

StatusOr<std::unique_ptr<Client>> Client::ConnectUnix(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path))
    return absl::InvalidArgumentError(Cat("socket path ", path, " is too long"));
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus(errno, "ttrpc: socket");
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, path.size());
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    return absl::UnavailableError(Cat("ttrpc: connecting to ", path, ": ", std::strerror(err)));
  }
  return std::unique_ptr<Client>(new Client(std::move(fd)));
}

Client::Client(UniqueFd fd) : fd_(std::move(fd)) {
  reader_ = std::thread([this] { ReadLoop(); });
}

Client::~Client() {
  shutdown(fd_.get(), SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
}

void Client::ReadLoop() {
  while (true) {
    auto frame = ReadFrame(fd_.get());
    std::lock_guard<std::mutex> lock(mu_);
    if (!frame.ok()) {
      broken_ = true;
      for (auto& [id, p] : pending_) {
        if (!p.done) {
          p.done = true;
          p.status = absl::UnavailableError("ttrpc: the connection to the server was lost");
        }
      }
      cv_.notify_all();
      return;
    }
    auto it = pending_.find(frame->header.stream_id);
    if (it == pending_.end() || frame->header.type != kResponse) continue;  // late answer of an abandoned call
    Pending& p = it->second;
    p.done = true;
    p.answered = true;
    ::ttrpc::Response resp;
    if (!frame->oversize.ok()) {
      p.status = frame->oversize;
    } else if (!resp.ParseFromString(frame->payload)) {
      p.status = absl::InternalError("ttrpc: undecodable response");
    } else if (resp.status().code() != 0) {
      p.status = Status(static_cast<absl::StatusCode>(resp.status().code()), resp.status().message());
    } else {
      p.payload = resp.payload();
    }
    cv_.notify_all();
  }
}

StatusOr<std::string> Client::Call(const std::string& service, const std::string& method, const std::string& request,
                                   std::chrono::nanoseconds timeout,
                                   const std::vector<std::pair<std::string, std::string>>& metadata, Outcome* outcome) {
  Outcome local;
  if (outcome == nullptr) outcome = &local;
  *outcome = Outcome{};
  if (timeout <= std::chrono::nanoseconds::zero() || timeout > std::chrono::hours(24)) {
    return absl::InvalidArgumentError("ttrpc: a call needs a timeout between 0 and 24 hours");
  }
  ::ttrpc::Request req;
  req.set_service(service);
  req.set_method(method);
  req.set_payload(request);
  req.set_timeout_nano(timeout.count());
  for (const auto& [k, v] : metadata) {
    auto* kv = req.add_metadata();
    kv->set_key(k);
    kv->set_value(v);
  }
  std::string bytes;
  req.SerializeToString(&bytes);
  uint32_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_) return absl::UnavailableError("ttrpc: the connection to the server was lost");
    id = next_stream_;
    next_stream_ += 2;
    pending_[id];
  }
  {
    std::lock_guard<std::mutex> w(write_mu_);
    if (Status s = WriteFrame(fd_.get(), id, kRequest, bytes); !s.ok()) {
      // A partly written frame leaves the stream out of sync: the
      // connection is done for, whatever the error was.
      shutdown(fd_.get(), SHUT_RDWR);
      std::lock_guard<std::mutex> lock(mu_);
      broken_ = true;
      pending_.erase(id);
      return absl::UnavailableError(Cat("ttrpc: sending the request: ", s.message()));
    }
  }
  outcome->sent = true;
  std::unique_lock<std::mutex> lock(mu_);
  const bool answered = cv_.wait_for(lock, timeout, [&] { return pending_[id].done; });
  Pending p = std::move(pending_[id]);
  pending_.erase(id);
  if (!answered) return absl::DeadlineExceededError(Cat("ttrpc: ", service, "/", method, " got no answer in time"));
  outcome->answered = p.answered;
  if (!p.status.ok()) return p.status;
  return std::move(p.payload);
}

bool Client::Broken() const {
  std::lock_guard<std::mutex> lock(mu_);
  return broken_;
}

}  // namespace cocostorage::ttrpc
