// In-memory RbdMapper for the CSI services' tests (test scaffolding, not
// product code): devices /dev/rbd0, /dev/rbd1, ... in map order.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "cocostorage/common/strings.h"
#include "rbd_mapper.h"

namespace cocostorage::csi {

// In-memory mapper for tests: devices /dev/rbd0, /dev/rbd1, ... in map order.
class FakeRbdMapper : public RbdMapper {
 public:
  StatusOr<std::string> Map(const RbdOptions& cluster, const RbdImageRef& ref) override;
  // Reboot of the node: every mapping is gone.
  void Reboot();
  // The cluster options of the last Map (tests check which credentials the
  // service chose).
  RbdOptions last_cluster() const;
  Status Unmap(const RbdImageRef& ref) override;
  StatusOr<std::string> MappedDevice(const RbdImageRef& ref) override;
  // The next Map or Unmap returns this error instead (once).
  void FailNext(Status s);
  int map_calls() const;

 private:
  static std::string Key(const RbdImageRef& ref) { return ref.pool + "/" + ref.image; }
  mutable std::mutex mu_;
  std::map<std::string, std::string> mapped_;  // "pool/image" -> device
  int next_ = 0;
  int map_calls_ = 0;
  Status fail_next_;
  RbdOptions last_cluster_;
};

inline StatusOr<std::string> FakeRbdMapper::Map(const RbdOptions& cluster, const RbdImageRef& ref) {
  std::lock_guard lock(mu_);
  ++map_calls_;
  last_cluster_ = cluster;
  if (!fail_next_.ok()) return std::exchange(fail_next_, OkStatus());
  auto [it, inserted] = mapped_.try_emplace(FakeRbdMapper::Key(ref));
  if (inserted) it->second = Cat("/dev/rbd", next_++);
  return it->second;
}

inline Status FakeRbdMapper::Unmap(const RbdImageRef& ref) {
  std::lock_guard lock(mu_);
  if (!fail_next_.ok()) return std::exchange(fail_next_, OkStatus());
  mapped_.erase(FakeRbdMapper::Key(ref));
  return OkStatus();
}

inline StatusOr<std::string> FakeRbdMapper::MappedDevice(const RbdImageRef& ref) {
  std::lock_guard lock(mu_);
  auto it = mapped_.find(FakeRbdMapper::Key(ref));
  return it == mapped_.end() ? std::string() : it->second;
}

inline void FakeRbdMapper::Reboot() {
  std::lock_guard lock(mu_);
  mapped_.clear();
}

inline RbdOptions FakeRbdMapper::last_cluster() const {
  std::lock_guard lock(mu_);
  return last_cluster_;
}

inline void FakeRbdMapper::FailNext(Status s) {
  std::lock_guard lock(mu_);
  fail_next_ = std::move(s);
}

inline int FakeRbdMapper::map_calls() const {
  std::lock_guard lock(mu_);
  return map_calls_;
}

}  // namespace cocostorage::csi
