#include "cocostorage/common/lock_map.h"

#include <utility>

namespace cocostorage {

LockMap::Guard::Guard(LockMap* owner, std::string key) : owner_(owner), key_(std::move(key)) {
  std::unique_lock<std::mutex> lock(owner_->mu_);
  Entry& e = owner_->entries_[key_];
  ++e.waiters;
  owner_->cv_.wait(lock, [&] { return !e.held; });  // std::map references stay valid
  --e.waiters;
  e.held = true;
}

LockMap::Guard::Guard(Guard&& o) noexcept : owner_(std::exchange(o.owner_, nullptr)), key_(std::move(o.key_)) {}

LockMap::Guard::~Guard() {
  if (owner_ != nullptr) owner_->Unlock(key_);
}

bool LockMap::TryLock(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = entries_[key];
  if (e.held) return false;
  e.held = true;
  return true;
}

void LockMap::Unlock(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  it->second.held = false;
  if (it->second.waiters == 0) {
    entries_.erase(it);
  } else {
    cv_.notify_all();
  }
}

size_t LockMap::Size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

}  // namespace cocostorage
