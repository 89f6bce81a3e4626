// Calls back when the mount table changes, without polling in a loop: the
// kernel marks /proc/self/mountinfo with POLLPRI on every mount and unmount.
// Used to notice that kata-agent unmounted a SecureMount volume (it never
// tells the CDH), so the agent can close what it opened.
#pragma once

#include <functional>
#include <thread>

#include "cocostorage/common/status.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::agent {

class MountWatcher {
 public:
  MountWatcher() = default;
  ~MountWatcher();
  MountWatcher(const MountWatcher&) = delete;
  MountWatcher& operator=(const MountWatcher&) = delete;

  // `on_change` runs on the watcher's thread, once per batch of changes.
  Status Start(std::function<void()> on_change, const std::string& mountinfo = "/proc/self/mountinfo");
  void Stop();

 private:
  void Loop();

  std::function<void()> on_change_;
  UniqueFd mountinfo_;
  UniqueFd wake_;  // eventfd: Stop()
  std::thread thread_;
};

}  // namespace cocostorage::agent
