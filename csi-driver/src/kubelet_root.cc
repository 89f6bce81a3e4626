#include "kubelet_root.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "params.h"

namespace cocostorage::csi {

Status KubeletRoot::CheckWithin(std::string_view path, std::string_view field) const {
  if (path == root_ || !IsPathWithin(root_, path)) {
    return absl::InvalidArgumentError(
        Cat(field, " \"", Echo(path), "\" is not below the kubelet root ", root_, " (--kubelet-root)"));
  }
  return OkStatus();
}

StatusOr<KubeletPath> KubeletRoot::Open(const std::string& path) const {
  COCO_RETURN_IF_ERROR(CheckWithin(path, "path"));
  // The root itself is followed (configuration); nothing below it is.
  UniqueFd dir(open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return ErrnoStatus(errno, Cat("opening kubelet root ", root_));
  std::vector<std::string> parts = Split(std::string_view(path).substr(root_ == "/" ? 1 : root_.size() + 1), '/');
  if (parts.empty()) return absl::InvalidArgumentError(Cat("\"", Echo(path), "\" names the kubelet root"));
  std::string walked = root_;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    walked = Cat(walked == "/" ? "" : walked, "/", parts[i]);
    UniqueFd next(openat(dir.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) {
      const int err = errno;
      if (err == ENOENT) return absl::NotFoundError(Cat(Echo(walked), " does not exist"));
      if (err == ELOOP || err == ENOTDIR) {
        return absl::FailedPreconditionError(
            Cat(Echo(walked), " is a symlink or not a directory; paths below the kubelet root are never followed"));
      }
      return ErrnoStatus(err, Cat("opening ", Echo(walked)));
    }
    dir = std::move(next);
  }
  return KubeletPath{std::move(dir), parts.back(), path};
}

}  // namespace cocostorage::csi
