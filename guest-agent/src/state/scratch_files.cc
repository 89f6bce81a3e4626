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
  Status Remove(const std::string& path) override { return RemoveFileIfExists(path); }
  Status MakeDir(const std::string& path) override { return MakeDirs(path, 0700); }
};

}  // namespace

std::unique_ptr<ScratchFiles> NewTmpfsScratchFiles() { return std::make_unique<TmpfsScratchFiles>(); }

}  // namespace cocostorage::agent
