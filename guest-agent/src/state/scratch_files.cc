#include "state/scratch_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::agent {
namespace {

class TmpfsScratchFiles final : public ScratchFiles {
 public:
  Status CreateSparse(const std::string& path, uint64_t bytes) override {
    UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) return ErrnoStatus(errno, Cat("creating ", path));
    if (ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) return ErrnoStatus(errno, Cat("sizing ", path));
    return OkStatus();
  }
  Status Write(const std::string& path, std::span<const uint8_t> bytes) override {
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) return ErrnoStatus(errno, Cat("creating ", path));
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t w = write(fd.get(), bytes.data() + done, bytes.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return ErrnoStatus(w < 0 ? errno : EIO, Cat("writing ", path));
      done += static_cast<size_t>(w);
    }
    return OkStatus();
  }
  StatusOr<std::vector<uint8_t>> Read(const std::string& path) override {
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid()) return ErrnoStatus(errno, Cat("opening ", path));
    std::vector<uint8_t> out;
    uint8_t buf[65536];
    for (;;) {
      ssize_t r = read(fd.get(), buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return ErrnoStatus(errno, Cat("reading ", path));
      if (r == 0) return out;
      out.insert(out.end(), buf, buf + r);
    }
  }
  Status Remove(const std::string& path) override { return RemoveFileIfExists(path); }
  Status MakeDir(const std::string& path) override { return MakeDirs(path, 0700); }
};

}  // namespace

std::unique_ptr<ScratchFiles> NewTmpfsScratchFiles() { return std::make_unique<TmpfsScratchFiles>(); }

}  // namespace cocostorage::agent
