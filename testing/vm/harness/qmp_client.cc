#include "qmp_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "cocostorage/common/strings.h"

namespace cocostorage::vmtest {

namespace {

using Clock = std::chrono::steady_clock;

int MsLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left < 0) return 0;
  return left > 1000000 ? 1000000 : static_cast<int>(left);
}

}  // namespace

StatusOr<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& socket_path,
                                                        std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(Cat("QMP socket path too long: ", socket_path));
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  const auto deadline = Clock::now() + timeout;
  UniqueFd fd;
  for (;;) {
    fd.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return ErrnoStatus(errno, "socket(AF_UNIX)");
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) break;
    int err = errno;
    if (Clock::now() >= deadline) return ErrnoStatus(err, Cat("connecting to QMP socket ", socket_path));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::unique_ptr<QmpClient> client(new QmpClient(std::move(fd)));
  {
    std::lock_guard<std::mutex> lock(client->mu_);
    COCO_ASSIGN_OR_RETURN(nlohmann::json greeting, client->ReadMessageLocked(deadline));
    if (!greeting.is_object() || !greeting.contains("QMP")) {
      return absl::InternalError(Cat("unexpected QMP greeting: ", greeting.dump()));
    }
  }
  COCO_RETURN_IF_ERROR(client->Execute("qmp_capabilities", nlohmann::json(), timeout).status());
  return client;
}

Status QmpClient::WriteLocked(const std::string& line) {
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "writing to QMP");
    off += static_cast<size_t>(n);
  }
  return OkStatus();
}

StatusOr<nlohmann::json> QmpClient::ReadMessageLocked(Clock::time_point deadline) {
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (TrimWhitespace(line).empty()) continue;
      nlohmann::json msg = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (msg.is_discarded()) return absl::InternalError(Cat("unparsable QMP message: ", line));
      return msg;
    }
    pollfd pfd{fd_.get(), POLLIN, 0};
    int r = ::poll(&pfd, 1, MsLeft(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoStatus(errno, "polling QMP socket");
    if (r == 0) return absl::DeadlineExceededError("timed out waiting for QMP");
    char buf[8192];
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "reading QMP socket");
    if (n == 0) return absl::UnavailableError("QMP connection closed (QEMU exited?)");
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

StatusOr<nlohmann::json> QmpClient::Execute(const std::string& command, const nlohmann::json& arguments,
                                            std::chrono::milliseconds timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto deadline = Clock::now() + timeout;
  const int id = next_id_++;
  nlohmann::json req = {{"execute", command}, {"id", id}};
  if (!arguments.is_null()) req["arguments"] = arguments;
  COCO_RETURN_IF_ERROR(WriteLocked(req.dump() + "\n"));
  for (;;) {
    COCO_ASSIGN_OR_RETURN(nlohmann::json msg, ReadMessageLocked(deadline));
    if (!msg.is_object()) continue;
    if (msg.contains("event")) {
      events_.push_back(std::move(msg));
      continue;
    }
    if (!msg.contains("id") || msg["id"] != id) continue;  // stale reply
    if (msg.contains("return")) return msg["return"];
    if (msg.contains("error") && msg["error"].is_object()) {
      const nlohmann::json& e = msg["error"];
      std::string cls = e.contains("class") && e["class"].is_string() ? e["class"].get<std::string>() : "Error";
      std::string desc = e.contains("desc") && e["desc"].is_string() ? e["desc"].get<std::string>() : e.dump();
      return absl::FailedPreconditionError(Cat("QMP ", command, ": ", cls, ": ", desc));
    }
    return absl::InternalError(Cat("unexpected QMP reply to ", command, ": ", msg.dump()));
  }
}

StatusOr<nlohmann::json> QmpClient::WaitEvent(const std::string& name, const EventFilter& filter,
                                              std::chrono::milliseconds timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto deadline = Clock::now() + timeout;
  auto matches = [&](const nlohmann::json& ev) {
    if (!ev.contains("event") || ev["event"] != name) return false;
    static const nlohmann::json kEmpty = nlohmann::json::object();
    const nlohmann::json& data = ev.contains("data") ? ev["data"] : kEmpty;
    return !filter || filter(data);
  };
  for (auto it = events_.begin(); it != events_.end(); ++it) {
    if (matches(*it)) {
      nlohmann::json ev = std::move(*it);
      events_.erase(it);
      return ev;
    }
  }
  for (;;) {
    auto msg = ReadMessageLocked(deadline);
    if (!msg.ok()) {
      if (absl::IsDeadlineExceeded(msg.status())) {
        return absl::DeadlineExceededError(Cat("timed out waiting for QMP event ", name));
      }
      return msg.status();
    }
    if (!msg->is_object() || !msg->contains("event")) continue;
    if (matches(*msg)) return *std::move(msg);
    events_.push_back(*std::move(msg));
  }
}

void QmpClient::ClearEvents() {
  std::lock_guard<std::mutex> lock(mu_);
  events_.clear();
}

}  // namespace cocostorage::vmtest
