// One mutex per key (a volume id, a target path), created on first use and
// dropped when its last holder or waiter leaves: the map never grows with
// ids a (hostile) caller merely mentions. Shared by both binaries.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <map>
#include <mutex>
#include <string>

namespace cocostorage {

class LockMap {
 public:
  class Guard {
   public:
    Guard(LockMap* owner, std::string key);
    ~Guard();
    Guard(Guard&& o) noexcept;
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    Guard& operator=(Guard&&) = delete;

   private:
    LockMap* owner_;
    std::string key_;
  };

  // Blocks until `key` is free, then holds it until the Guard goes away.
  [[nodiscard]] Guard Lock(const std::string& key) { return Guard(this, key); }
  // Like Lock, but returns false at once when `key` is held.
  [[nodiscard]] bool TryLock(const std::string& key);
  void Unlock(const std::string& key);
  // Keys currently held or waited for (tests: the map does not leak).
  size_t Size() const;

 private:
  struct Entry {
    bool held = false;
    int waiters = 0;
  };
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Entry> entries_;
};

}  // namespace cocostorage
