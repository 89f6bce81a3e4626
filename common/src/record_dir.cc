#include "cocostorage/common/record_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"

namespace cocostorage {
namespace {

StatusOr<std::vector<std::string>> ListNames(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, Cat("opening ", dir));
  std::vector<std::string> out;
  while (dirent* e = readdir(d)) out.emplace_back(e->d_name);
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

Status RecordDir::Init() const {
  COCO_RETURN_IF_ERROR(MakeDirs(dir_, 0700));
  COCO_ASSIGN_OR_RETURN(std::vector<std::string> names, ListNames(dir_));
  for (const auto& n : names) {
    if (n.find(".json.tmp.") != std::string::npos) COCO_RETURN_IF_ERROR(RemoveFileIfExists(Cat(dir_, "/", n)));
  }
  return OkStatus();
}

StatusOr<std::optional<std::string>> RecordDir::Read(const std::string& id) const {
  auto text = ReadFileToString(PathFor(id), 1 << 20);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return std::optional<std::string>();
    return text.status();
  }
  return std::optional<std::string>(std::move(*text));
}

Status RecordDir::Write(const std::string& id, const std::string& content) const {
  return AtomicWriteFile(PathFor(id), content, 0600);
}

Status RecordDir::Remove(const std::string& id) const {
  COCO_RETURN_IF_ERROR(RemoveFileIfExists(PathFor(id)));
  SyncDir(dir_);
  return OkStatus();
}

StatusOr<std::vector<std::string>> RecordDir::ListIds() const {
  COCO_ASSIGN_OR_RETURN(std::vector<std::string> names, ListNames(dir_));
  std::vector<std::string> ids;
  constexpr std::string_view kExt = ".json";
  for (const auto& n : names) {
    if (n.size() > kExt.size() && n.compare(n.size() - kExt.size(), kExt.size(), kExt) == 0) {
      ids.push_back(n.substr(0, n.size() - kExt.size()));
    }
  }
  return ids;
}

void SyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

}  // namespace cocostorage
