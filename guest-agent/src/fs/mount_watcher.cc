#include "fs/mount_watcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::agent {

MountWatcher::~MountWatcher() { Stop(); }

Status MountWatcher::Start(std::function<void()> on_change, const std::string& mountinfo) {
  on_change_ = std::move(on_change);
  mountinfo_ = UniqueFd(open(mountinfo.c_str(), O_RDONLY | O_CLOEXEC));
  if (!mountinfo_.valid()) return ErrnoStatus(errno, Cat("open ", mountinfo));
  wake_ = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_.valid()) return ErrnoStatus(errno, "eventfd");
  thread_ = std::thread([this] { Loop(); });
  return OkStatus();
}

void MountWatcher::Stop() {
  if (!thread_.joinable()) return;
  const uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof(one));
  thread_.join();
}

void MountWatcher::Loop() {
  for (;;) {
    pollfd fds[2] = {{mountinfo_.get(), POLLPRI, 0}, {wake_.get(), POLLIN, 0}};
    int n = poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log::Error("mount_watcher.failed", {{"error", Cat("poll: ", errno)}});
      return;
    }
    if (fds[1].revents != 0) return;
    // POLLERR|POLLPRI: the mount table changed since the last poll (the
    // kernel records that this poll saw the change).
    if (fds[0].revents & (POLLPRI | POLLERR)) on_change_();
  }
}

}  // namespace cocostorage::agent
