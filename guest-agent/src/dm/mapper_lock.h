// One process-wide lock for libcryptsetup and libdevmapper calls. Neither is
// thread-safe, and libcryptsetup drives libdevmapper's global state itself, so
// separate locks per library would still race.
#pragma once

#include <mutex>

namespace cocostorage::agent {

inline std::mutex& MapperLock() {
  static std::mutex mu;
  return mu;
}

}  // namespace cocostorage::agent
