#include "mount_info.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"
#include "params.h"

namespace cocostorage::csi {
namespace {
constexpr char kFileName[] = "mountInfo.json";
// The only encryptionKey for which kata-agent calls the CDH slot.
constexpr char kEphemeralKey[] = "ephemeral";
}  // namespace

bool ShouldCreateFilesystem(VolumeMode publish_mode) { return publish_mode != VolumeMode::kBlock; }

MountInfo BuildMountInfo(const VolumeRecord& volume, const PublishRecord& pub) {
  MountInfo m;
  // An RBD image is handed over at the device it is mapped at on this node.
  m.device = volume.staged && !volume.staged->device.empty() ? volume.staged->device : volume.device;
  m.fs_type = volume.params.fs_type.empty() ? "ext4" : volume.params.fs_type;
  const bool block = pub.mode == VolumeMode::kBlock;
  const bool create_fs = !block && pub.create_filesystem;
  // Never a KBS URI here: kata-agent would mount the device in plaintext
  // (see the contract in mount_info.h).
  m.metadata["encryptionKey"] = kEphemeralKey;
  m.metadata["createFilesystem"] = create_fs ? "true" : "false";
  if (!pub.fs_group.empty()) m.metadata["fsGroup"] = pub.fs_group;
  const bool persistent = volume.params.key_source == KeySource::kKbs;
  m.metadata["cocostorage.dev/kind"] = persistent ? "persistent" : "ephemeral";
  if (persistent) m.metadata["cocostorage.dev/kbsResourceUri"] = volume.params.kbs_resource_uri;
  m.metadata["cocostorage.dev/integrity"] = volume.params.integrity;
  m.metadata["cocostorage.dev/volumeMode"] = VolumeModeName(pub.mode);
  m.metadata["cocostorage.dev/volumeId"] = volume.id;
  if (!volume.params.mkfs_options.empty()) m.metadata["cocostorage.dev/mkfsOptions"] = volume.params.mkfs_options;
  if (!block) m.options = pub.mount_flags;
  if (pub.readonly) m.options.push_back("ro");
  return m;
}

std::string MountInfoToJson(const MountInfo& info) {
  nlohmann::json j;
  j["volume-type"] = info.volume_type;
  j["device"] = info.device;
  j["fstype"] = info.fs_type;
  j["metadata"] = info.metadata;
  j["options"] = info.options;
  return j.dump();
}

StatusOr<MountInfo> MountInfoFromJson(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError("mountInfo.json is not a JSON object");
  try {
    MountInfo m;
    m.volume_type = j.at("volume-type").get<std::string>();
    m.device = j.at("device").get<std::string>();
    m.fs_type = j.at("fstype").get<std::string>();
    m.metadata = j.at("metadata").get<std::map<std::string, std::string>>();
    m.options = j.at("options").get<std::vector<std::string>>();
    return m;
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(Cat("mountInfo.json: ", e.what()));
  }
}

StatusOr<std::string> MountInfoWriter::DirFor(const std::string& target_path) const {
  COCO_ASSIGN_OR_RETURN(std::string name, KataVolumeDirName(target_path));
  return Cat(root_, "/", name);
}

Status MountInfoWriter::Write(const std::string& target_path, const MountInfo& info) const {
  COCO_ASSIGN_OR_RETURN(std::string dir, DirFor(target_path));
  COCO_RETURN_IF_ERROR(MakeDirs(root_, 0700));
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoStatus(errno, Cat("mkdir ", dir));
  struct stat st {};
  if (lstat(dir.c_str(), &st) != 0) return ErrnoStatus(errno, Cat("stat ", dir));
  if (!S_ISDIR(st.st_mode)) return absl::FailedPreconditionError(Cat(dir, " exists and is not a directory"));
  if (chmod(dir.c_str(), 0700) != 0) return ErrnoStatus(errno, Cat("chmod ", dir));
  COCO_RETURN_IF_ERROR(AtomicWriteFile(Cat(dir, "/", kFileName), MountInfoToJson(info), 0600));
  SyncDir(root_);
  return OkStatus();
}

Status MountInfoWriter::Remove(const std::string& target_path) const {
  COCO_ASSIGN_OR_RETURN(std::string dir, DirFor(target_path));
  UniqueFd dfd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dfd.valid()) {
    if (errno == ENOENT) return OkStatus();
    return ErrnoStatus(errno, Cat("opening ", dir));
  }
  // mountInfo.json goes first: once it is gone the runtime no longer sees a
  // direct volume, whatever else remains.
  if (unlinkat(dfd.get(), kFileName, 0) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, Cat("removing ", dir, "/", kFileName));
  }
  int dup_fd = dup(dfd.get());
  if (dup_fd < 0) return ErrnoStatus(errno, Cat("dup ", dir));
  DIR* d = fdopendir(dup_fd);
  if (d == nullptr) {
    close(dup_fd);
    return ErrnoStatus(errno, Cat("reading ", dir));
  }
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  closedir(d);
  for (const auto& n : names) {
    if (unlinkat(dfd.get(), n.c_str(), 0) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, Cat("removing ", dir, "/", n));
    }
  }
  if (rmdir(dir.c_str()) != 0 && errno != ENOENT) return ErrnoStatus(errno, Cat("rmdir ", dir));
  SyncDir(root_);
  return OkStatus();
}

StatusOr<std::optional<MountInfo>> MountInfoWriter::Read(const std::string& target_path) const {
  COCO_ASSIGN_OR_RETURN(std::string dir, DirFor(target_path));
  auto text = ReadFileToString(Cat(dir, "/", kFileName), 1 << 20);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return std::optional<MountInfo>();
    return text.status();
  }
  COCO_ASSIGN_OR_RETURN(MountInfo m, MountInfoFromJson(*text));
  return std::optional<MountInfo>(std::move(m));
}

}  // namespace cocostorage::csi
