#include "cocostorage/common/fs_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <vector>

#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage {

std::string AtomicWriteTempPath(const std::string& path) {
  // pid keeps processes apart, the counter keeps this process's threads (and
  // successive calls) apart; the ".tmp." infix is what crash clean-up
  // (RecordDir::Init) looks for.
  static std::atomic<uint64_t> counter{0};
  return Cat(path, ".tmp.", getpid(), ".", counter.fetch_add(1, std::memory_order_relaxed));
}

std::string ParentDir(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

Status AtomicWriteFile(const std::string& path, std::string_view content, unsigned mode) {
  const std::string dir = ParentDir(path);
  std::string tmp;
  UniqueFd created;
  // O_EXCL: never write into a file someone else has open. A leftover of a
  // crashed process that had our pid is skipped (it is cleaned up at start).
  for (int attempt = 0; attempt < 16 && !created.valid(); ++attempt) {
    tmp = AtomicWriteTempPath(path);
    created = UniqueFd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
    if (!created.valid() && errno != EEXIST) return ErrnoStatus(errno, Cat("creating ", tmp));
  }
  if (!created.valid()) return ErrnoStatus(EEXIST, Cat("creating a temp file beside ", path));
  {
    UniqueFd fd = std::move(created);
    // umask may have narrowed the mode; the caller's mode is the contract.
    if (fchmod(fd.get(), mode) != 0) {
      int err = errno;
      unlink(tmp.c_str());
      return ErrnoStatus(err, Cat("chmod ", tmp));
    }
    size_t done = 0;
    while (done < content.size()) {
      ssize_t n = write(fd.get(), content.data() + done, content.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        unlink(tmp.c_str());
        return ErrnoStatus(err, Cat("writing ", tmp));
      }
      done += static_cast<size_t>(n);
    }
    if (fsync(fd.get()) != 0) {
      int err = errno;
      unlink(tmp.c_str());
      return ErrnoStatus(err, Cat("fsync ", tmp));
    }
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return ErrnoStatus(err, Cat("renaming into ", path));
  }
  UniqueFd dfd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.valid()) fsync(dfd.get());
  return OkStatus();
}

StatusOr<std::string> ReadFileToString(const std::string& path, size_t max_bytes) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, Cat("opening ", path));
  std::string out;
  char buf[8192];
  while (true) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, Cat("reading ", path));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) return absl::OutOfRangeError(Cat(path, " is larger than ", max_bytes, " bytes"));
  }
  return out;
}

Status MakeDirs(const std::string& path, unsigned mode) {
  if (path.empty()) return absl::InvalidArgumentError("empty directory path");
  std::string cur;
  for (const std::string& part : Split(path, '/')) {
    cur = Cat(cur, "/", part);
    if (mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) return ErrnoStatus(errno, Cat("mkdir ", cur));
  }
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, Cat("stat ", path));
  if (!S_ISDIR(st.st_mode)) return absl::FailedPreconditionError(Cat(path, " exists and is not a directory"));
  return OkStatus();
}

StatusOr<std::string> NormalizeAbsolutePath(std::string_view path) {
  if (path.empty() || path.front() != '/') {
    return absl::InvalidArgumentError(Cat("path must be absolute: \"", path, "\""));
  }
  if (path.find('\0') != std::string_view::npos) return absl::InvalidArgumentError("path contains a NUL byte");
  if (path.size() > 4096) return absl::InvalidArgumentError("path longer than 4096 bytes");
  std::vector<std::string> parts;
  for (const std::string& part : Split(path, '/')) {
    if (part == ".") continue;
    if (part == "..") {
      if (parts.empty()) return absl::InvalidArgumentError(Cat("path climbs above /: \"", path, "\""));
      parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  return Cat("/", Join(parts, "/"));
}

bool IsPathWithin(std::string_view root, std::string_view path) {
  if (root == "/") return !path.empty() && path.front() == '/';
  if (path.size() < root.size() || path.substr(0, root.size()) != root) return false;
  return path.size() == root.size() || path[root.size()] == '/';
}

Status RemoveFileIfExists(const std::string& path) {
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus(errno, Cat("removing ", path));
  return OkStatus();
}

}  // namespace cocostorage
