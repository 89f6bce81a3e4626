#include "node_service.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <functional>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"
#include "csi_util.h"
#include "kubelet_root.h"
#include "params.h"

namespace cocostorage::csi {
namespace {

constexpr char kEphemeralKey[] = "csi.storage.k8s.io/ephemeral";

// Of an existing target (never followed): OK with *exists=true when it has
// the type the mode needs (directory, or regular file for block),
// FAILED_PRECONDITION when it has another (a symlink included); *exists=false
// when it is absent.
Status CheckExistingTarget(const KubeletPath& t, VolumeMode mode, bool* exists) {
  struct stat st {};
  *exists = fstatat(t.parent.get(), t.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (!*exists) return errno == ENOENT ? OkStatus() : ErrnoStatus(errno, Cat("stat ", Echo(t.path)));
  bool ok = mode == VolumeMode::kBlock ? S_ISREG(st.st_mode) : S_ISDIR(st.st_mode);
  if (!ok) {
    return absl::FailedPreconditionError(Cat("target_path ", Echo(t.path), " exists and is not a ",
                                             mode == VolumeMode::kBlock ? "regular file" : "directory"));
  }
  return OkStatus();
}

// Opens a publish target's parent from the kubelet root (kubelet creates the
// parent): a missing parent, or a symlink anywhere on the way, is
// FAILED_PRECONDITION before anything is recorded or created.
StatusOr<KubeletPath> OpenPublishTarget(const KubeletRoot& kubelet, const std::string& path, VolumeMode mode) {
  auto t = kubelet.Open(path);
  if (!t.ok()) {
    if (absl::IsNotFound(t.status())) {
      return absl::FailedPreconditionError(Cat("parent directory of ", Echo(path), " does not exist"));
    }
    return t.status();
  }
  bool exists = false;
  COCO_RETURN_IF_ERROR(CheckExistingTarget(*t, mode, &exists));
  return t;
}

// Sets or clears the immutable attribute of the target directory. Sealed, the
// directory takes no new entry from anyone, root included (a runc container
// has no CAP_LINUX_IMMUTABLE): a pod that is not in a Kata VM — the runtime
// that ignores mountInfo.json and bind-mounts the host path — fails to write
// instead of writing plaintext onto the host. Kata never uses the host path of
// a direct-assigned volume, and kubelet leaves it alone (VOLUME_MOUNT_GROUP:
// no host-side chown). Fail closed: a target that cannot be sealed (no
// CAP_LINUX_IMMUTABLE, a file system without the attribute) fails the publish.
Status SetImmutable(const KubeletPath& t, bool on) {
  UniqueFd fd(openat(t.parent.get(), t.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) {
    if (!on && errno == ENOENT) return OkStatus();
    return ErrnoStatus(errno, Cat("opening ", Echo(t.path)));
  }
  int flags = 0;
  if (ioctl(fd.get(), FS_IOC_GETFLAGS, &flags) != 0) {
    return absl::FailedPreconditionError(Cat("cannot read the attributes of target_path ", Echo(t.path), ": ",
                                             ErrnoStatus(errno, "FS_IOC_GETFLAGS").message(),
                                             " (the kubelet directory's file system must support chattr +i)"));
  }
  const int want = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
  if (want == flags) return OkStatus();
  if (ioctl(fd.get(), FS_IOC_SETFLAGS, &want) != 0) {
    const int err = errno;
    return absl::FailedPreconditionError(
        Cat("cannot ", on ? "seal" : "unseal", " target_path ", Echo(t.path),
            " (immutable attribute): ", ErrnoStatus(err, "FS_IOC_SETFLAGS").message(),
            err == EPERM ? "; the plugin needs CAP_LINUX_IMMUTABLE" : "; the file system must support chattr +i"));
  }
  return OkStatus();
}

// Creates what kubelet expects at the target: a directory for file system
// volumes (sealed, see SetImmutable), an empty regular file for block
// volumes (a loop device over it has no byte to write). Never follows a
// symlink.
Status CreateTarget(const KubeletPath& t, VolumeMode mode) {
  bool exists = false;
  COCO_RETURN_IF_ERROR(CheckExistingTarget(t, mode, &exists));
  if (mode == VolumeMode::kFilesystem) {
    if (!exists && mkdirat(t.parent.get(), t.name.c_str(), 0750) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, Cat("mkdir ", Echo(t.path)));
    }
    return SetImmutable(t, true);
  }
  if (exists) return OkStatus();
  UniqueFd fd(openat(t.parent.get(), t.name.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640));
  if (!fd.valid()) return ErrnoStatus(errno, Cat("creating ", Echo(t.path)));
  return OkStatus();
}

// Removes what CreateTarget made: an empty directory or an empty regular
// file. Anything else at the target (a non-empty directory, a file with
// bytes, a symlink, a device) is not ours: it is left untouched and the call
// fails with FAILED_PRECONDITION naming it, so that kubelet retries and an
// operator sees why, instead of an OK that leaves a target behind.
Status RemoveTarget(const KubeletPath& t) {
  struct stat st {};
  if (fstatat(t.parent.get(), t.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return OkStatus();
    return ErrnoStatus(errno, Cat("stat ", Echo(t.path)));
  }
  if (S_ISDIR(st.st_mode)) {
    COCO_RETURN_IF_ERROR(SetImmutable(t, false));
    if (unlinkat(t.parent.get(), t.name.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT) return OkStatus();
    if (errno == ENOTEMPTY || errno == EEXIST) {
      return absl::FailedPreconditionError(Cat("target_path ", Echo(t.path),
                                               " is not empty: it holds files this plugin did not create; ",
                                               "they are left in place and must be removed before the target can be"));
    }
    if (errno == EBUSY) {
      return absl::FailedPreconditionError(Cat("target_path ", Echo(t.path), " is busy (a mount point?)"));
    }
    return ErrnoStatus(errno, Cat("rmdir ", Echo(t.path)));
  }
  if (S_ISREG(st.st_mode) && st.st_size == 0) {
    if (unlinkat(t.parent.get(), t.name.c_str(), 0) == 0 || errno == ENOENT) return OkStatus();
    return ErrnoStatus(errno, Cat("removing ", Echo(t.path)));
  }
  return absl::FailedPreconditionError(Cat(
      "target_path ", Echo(t.path), " is not what this plugin created (an empty directory or file); left in place"));
}

// Whether a recorded path exists, reached without following symlinks.
bool PathExists(const KubeletRoot& kubelet, const std::string& path) {
  auto t = kubelet.Open(path);
  struct stat st {};
  return t.ok() && fstatat(t->parent.get(), t->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

bool IsRbdDevice(const VolumeRecord& r) { return r.device.rfind("rbd:", 0) == 0; }

}  // namespace

StatusOr<VolumeRecord> NodeService::AttachedOnlyRecord(const pb::NodeStageVolumeRequest& req, const Capability& cap) {
  // A volume of the cluster that another node's controller created: the PV's
  // volume context (what CreateVolume answered) names its cluster and pool;
  // its size is the image's.
  const std::map<std::string, std::string> ctx = ToStdMap(req.volume_context());
  COCO_ASSIGN_OR_RETURN(VolumeParams params, ParseVolumeParams(ctx));
  if (!params.IsRbd()) return absl::NotFoundError(Cat("volume ", req.volume_id(), " does not exist"));
  if (params.HasUriTemplate()) {
    return absl::InvalidArgumentError("volume_context: kbsResourceUri is an unresolved template");
  }
  // The cluster is always the plugin's: monitors in a volume context (a
  // hand-written PV, or one from before a mon failover) are not used.
  params.rbd_monitors.clear();
  if (RbdPoolOfVolumeId(req.volume_id()) != params.rbd_pool) {
    return absl::InvalidArgumentError(
        Cat("volume ", req.volume_id(), " is not an RBD volume of pool ", Echo(params.rbd_pool)));
  }
  COCO_ASSIGN_OR_RETURN(VolumeBackendRef backend, d_.backend.Scoped(params, ToStdMap(req.secrets())));
  COCO_ASSIGN_OR_RETURN(BackingInfo info, backend->Stat(req.volume_id()));
  VolumeRecord r;
  r.id = req.volume_id();
  r.capacity_bytes = info.size_bytes;
  r.params = params;
  if (r.params.fs_type.empty()) r.params.fs_type = cap.fs_type.empty() ? "ext4" : cap.fs_type;
  r.mode = cap.mode;
  r.backend = d_.backend.Name();
  r.device = info.device;
  r.attached_only = true;
  return r;
}

grpc::Status NodeService::NodeStageVolume(grpc::ServerContext*, const pb::NodeStageVolumeRequest* req,
                                          pb::NodeStageVolumeResponse*) {
  return Reply("NodeStageVolume", req->volume_id(), DoStage(*req));
}

Status NodeService::DoStage(const pb::NodeStageVolumeRequest& req) {
  if (req.volume_id().empty()) return absl::InvalidArgumentError("volume_id is required");
  COCO_RETURN_IF_ERROR(ValidateRequestPath(req.staging_target_path(), "staging_target_path"));
  COCO_RETURN_IF_ERROR(d_.kubelet.CheckWithin(req.staging_target_path(), "staging_target_path"));
  if (!req.has_volume_capability()) return absl::InvalidArgumentError("volume_capability is required");
  COCO_ASSIGN_OR_RETURN(Capability cap, ParseCapability(req.volume_capability()));
  COCO_RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  const std::string& id = req.volume_id();
  auto guard = d_.locks.Lock(id);
  COCO_ASSIGN_OR_RETURN(std::optional<VolumeRecord> r, d_.store.Load(id));
  if (!r && d_.backend.ClusterWide()) {
    COCO_ASSIGN_OR_RETURN(r, AttachedOnlyRecord(req, cap));
  }
  if (!r) return absl::NotFoundError(Cat("volume ", id, " does not exist"));
  COCO_RETURN_IF_ERROR(CheckCapabilityFits(*r, cap, absl::StatusCode::kFailedPrecondition));
  StageRecord want{req.staging_target_path(), cap.mode, cap.access_mode, ""};
  if (r->staged) {
    if (r->staged->path != want.path) {
      return absl::FailedPreconditionError(Cat("volume ", id, " is already staged at ", Echo(r->staged->path)));
    }
    if (!r->staged->SameRequest(want)) {
      return absl::AlreadyExistsError(
          Cat("volume ", id, " is staged at ", Echo(want.path), " with another capability"));
    }
    if (!IsRbdDevice(*r)) return OkStatus();
    // Staged already; the mapping may not be (a node reboot drops every
    // mapping, and kubelet stages again): map is idempotent.
  }
  if (IsRbdDevice(*r)) {
    if (d_.rbd_mapper == nullptr) {
      return absl::FailedPreconditionError(Cat("volume ", id, " is an RBD image and this plugin maps none"));
    }
    COCO_ASSIGN_OR_RETURN(RbdImageRef ref, ParseRbdDeviceRef(r->device));
    COCO_ASSIGN_OR_RETURN(RbdOptions cluster, RbdClusterOptions(d_.rbd_monitors, r->params, ToStdMap(req.secrets()),
                                                                d_.rbd_credentials, d_.rbd_timeout));
    COCO_ASSIGN_OR_RETURN(want.device, d_.rbd_mapper->Map(cluster, ref));
    if (r->staged && r->staged->device == want.device) return OkStatus();
    log::Info("volume.mapped", {{"volume", id}, {"image", Cat(ref.pool, "/", ref.image)}, {"device", want.device}});
  }
  const bool remapped = r->staged.has_value();
  const bool fresh_map = !remapped && !want.device.empty();
  r->staged = want;
  if (Status saved = d_.store.Save(*r); !saved.ok()) {
    // Not recorded: not staged. Do not leave the mapping behind.
    if (fresh_map) (void)d_.rbd_mapper->Unmap(*ParseRbdDeviceRef(r->device));
    return saved;
  }
  if (remapped) {
    // The image came back at another device: descriptors still naming the
    // old one are rewritten (after a reboot they are gone anyway).
    for (const auto& [target, pub] : r->targets) {
      auto existing = d_.mount_info.Read(target);
      if (existing.ok() && *existing) COCO_RETURN_IF_ERROR(d_.mount_info.Write(target, BuildMountInfo(*r, pub)));
    }
  }
  return OkStatus();
}

grpc::Status NodeService::NodeUnstageVolume(grpc::ServerContext*, const pb::NodeUnstageVolumeRequest* req,
                                            pb::NodeUnstageVolumeResponse*) {
  return Reply("NodeUnstageVolume", req->volume_id(), DoUnstage(*req));
}

Status NodeService::DoUnstage(const pb::NodeUnstageVolumeRequest& req) {
  if (req.volume_id().empty()) return absl::InvalidArgumentError("volume_id is required");
  COCO_RETURN_IF_ERROR(ValidateRequestPath(req.staging_target_path(), "staging_target_path"));
  COCO_RETURN_IF_ERROR(d_.kubelet.CheckWithin(req.staging_target_path(), "staging_target_path"));
  Status valid = ValidateVolumeId(req.volume_id());
  if (absl::IsNotFound(valid)) return OkStatus();  // cannot be staged
  COCO_RETURN_IF_ERROR(valid);
  const std::string& id = req.volume_id();
  auto guard = d_.locks.Lock(id);
  COCO_ASSIGN_OR_RETURN(std::optional<VolumeRecord> r, d_.store.Load(id));
  if ((!r || !r->staged) && d_.backend.ClusterWide() && d_.rbd_mapper != nullptr) {
    // Unstaged as far as the records go, but a map may have happened before
    // a crash or a failed save: the image is unmapped all the same (its
    // watcher would block DeleteVolume forever). The id names the image.
    if (const std::string pool = RbdPoolOfVolumeId(id); !pool.empty()) {
      COCO_RETURN_IF_ERROR(d_.rbd_mapper->Unmap(RbdImageRef{pool, RbdImageName(id)}));
    }
    if (r && r->attached_only) COCO_RETURN_IF_ERROR(d_.store.Remove(id));
    return OkStatus();
  }
  // Not staged there (or gone): the wanted end state already holds.
  if (!r || !r->staged || r->staged->path != req.staging_target_path()) return OkStatus();
  if (!r->targets.empty()) {
    return absl::FailedPreconditionError(
        Cat("volume ", id, " is still published at ", Echo(r->targets.begin()->first), "; unpublish first"));
  }
  if (IsRbdDevice(*r)) {
    if (d_.rbd_mapper == nullptr) {
      return absl::FailedPreconditionError(Cat("volume ", id, " is an RBD image and this plugin maps none"));
    }
    // Unmapped before the record lets go of it; a VM that still holds the
    // device makes this fail (EBUSY) and kubelet retries.
    COCO_ASSIGN_OR_RETURN(RbdImageRef ref, ParseRbdDeviceRef(r->device));
    COCO_RETURN_IF_ERROR(d_.rbd_mapper->Unmap(ref));
    log::Info("volume.unmapped", {{"volume", id}, {"image", Cat(ref.pool, "/", ref.image)}});
  }
  if (r->attached_only) return d_.store.Remove(id);
  r->staged.reset();
  return d_.store.Save(*r);
}

grpc::Status NodeService::NodePublishVolume(grpc::ServerContext*, const pb::NodePublishVolumeRequest* req,
                                            pb::NodePublishVolumeResponse*) {
  return Reply("NodePublishVolume", req->volume_id(), DoPublish(*req));
}

Status NodeService::DoPublish(const pb::NodePublishVolumeRequest& req) {
  if (req.volume_id().empty()) return absl::InvalidArgumentError("volume_id is required");
  COCO_RETURN_IF_ERROR(ValidateRequestPath(req.target_path(), "target_path"));
  COCO_RETURN_IF_ERROR(d_.kubelet.CheckWithin(req.target_path(), "target_path"));
  COCO_RETURN_IF_ERROR(KataVolumeDirName(req.target_path()).status());
  if (!req.has_volume_capability()) return absl::InvalidArgumentError("volume_capability is required");
  COCO_ASSIGN_OR_RETURN(Capability cap, ParseCapability(req.volume_capability()));
  auto ctx_it = req.volume_context().find(kEphemeralKey);
  const bool inline_volume = ctx_it != req.volume_context().end() && ctx_it->second == "true";
  if (!inline_volume) {
    if (req.staging_target_path().empty()) {
      return absl::FailedPreconditionError("staging_target_path is required: the volume must be staged first");
    }
    COCO_RETURN_IF_ERROR(ValidateRequestPath(req.staging_target_path(), "staging_target_path"));
    COCO_RETURN_IF_ERROR(d_.kubelet.CheckWithin(req.staging_target_path(), "staging_target_path"));
  }
  COCO_RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  const std::string& id = req.volume_id();
  const std::string& target = req.target_path();
  auto target_guard = d_.target_locks.Lock(target);  // always before the volume lock
  auto guard = d_.locks.Lock(id);
  COCO_ASSIGN_OR_RETURN(std::optional<VolumeRecord> r, d_.store.Load(id));

  bool created_here = false;
  if (!r && inline_volume && d_.backend.ClusterWide()) {
    return absl::InvalidArgumentError(
        Cat("inline ephemeral volumes need node-local backing; this plugin runs \"", d_.backend.Name(), "\""));
  }
  if (!r && inline_volume) {
    // Refused before anything is made: the volume could never serve it.
    COCO_RETURN_IF_ERROR(RequireSingleNode(cap, absl::StatusCode::kFailedPrecondition));
    // CSI inline ephemeral volume: exists for this pod only, sized by its
    // "size" attribute and configured by the same keys as a StorageClass.
    std::map<std::string, std::string> attrs = ToStdMap(req.volume_context());
    if (auto uri = attrs.find("kbsResourceUri"); uri != attrs.end() && IsKbsResourceUriTemplate(uri->second)) {
      return absl::InvalidArgumentError(
          "kbsResourceUri templates (${pvc.namespace}, ${pvc.name}, ${pv.name}) need a PersistentVolumeClaim; an "
          "inline ephemeral volume has none (and must use keySource \"ephemeral\")");
    }
    COCO_ASSIGN_OR_RETURN(VolumeParams params, ParseVolumeParams(attrs, /*allow_size=*/true));
    if (params.key_source != KeySource::kEphemeral) {
      return absl::InvalidArgumentError("inline ephemeral volumes require keySource \"ephemeral\"");
    }
    if (!params.fs_type.empty() && !cap.fs_type.empty() && params.fs_type != cap.fs_type) {
      // The request contradicts itself (as CreateVolume's fsType conflict).
      return absl::InvalidArgumentError(
          Cat("fsType \"", params.fs_type, "\" conflicts with capability fs_type \"", cap.fs_type, "\""));
    }
    if (params.fs_type.empty()) params.fs_type = cap.fs_type.empty() ? "ext4" : cap.fs_type;
    int64_t want = kDefaultVolumeBytes;
    if (auto it = attrs.find("size"); it != attrs.end()) {
      COCO_ASSIGN_OR_RETURN(want, ParseInlineSize(it->second));
    }
    COCO_ASSIGN_OR_RETURN(int64_t size, ResolveCapacity(want, 0, kDefaultVolumeBytes, kSizeGranularity));
    COCO_RETURN_IF_ERROR(d_.ledger.Reserve(id, size));
    auto info = d_.backend.Create(id, size);
    if (!info.ok()) {
      d_.ledger.Release(id);
      return info.status();
    }
    VolumeRecord nr;
    nr.id = id;
    nr.capacity_bytes = size;
    nr.params = params;
    nr.mode = cap.mode;
    nr.backend = d_.backend.Name();
    nr.device = info->device;
    nr.inline_ephemeral = true;
    r = std::move(nr);
    created_here = true;
  }
  // An inline volume made by this call is undone on every failure before
  // its record is committed.
  bool committed = false;
  struct Undo {
    std::function<void()> fn;
    ~Undo() { fn(); }
  } undo{[&] {
    if (created_here && !committed) {
      (void)d_.backend.Delete(id);
      d_.ledger.Release(id);
    }
  }};
  if (!r) return absl::NotFoundError(Cat("volume ", id, " does not exist"));
  COCO_RETURN_IF_ERROR(CheckCapabilityFits(*r, cap, absl::StatusCode::kFailedPrecondition));
  if (!r->inline_ephemeral) {
    if (!r->staged || r->staged->path != req.staging_target_path()) {
      return absl::FailedPreconditionError(Cat("volume ", id, " is not staged at ", Echo(req.staging_target_path())));
    }
    if (IsRbdDevice(*r) && r->staged->device.empty()) {
      return absl::FailedPreconditionError(Cat("volume ", id, " is staged but not mapped; stage it again"));
    }
  }
  for (const auto& [other, unused] : r->targets) {
    if (other != target) {
      // One direct-assigned device, one VM: a second VM opening the same
      // device would corrupt it.
      return absl::FailedPreconditionError(Cat("volume ", id, " is already published at ", Echo(other)));
    }
  }
  PublishRecord pub;
  pub.mode = cap.mode;
  pub.access_mode = cap.access_mode;
  pub.readonly = req.readonly() || cap.access_mode == pb::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY;
  pub.fs_group = cap.mount_group;
  pub.mount_flags = cap.mount_flags;
  if (auto it = r->targets.find(target); it != r->targets.end()) {
    if (!it->second.SameRequest(pub)) {
      return absl::AlreadyExistsError(
          Cat("volume ", id, " is published at ", Echo(target), " with another capability"));
    }
  }
  // A function of the mode alone, so a retry writes the same descriptor (and
  // a record from an older version, which said "false" for a KBS volume
  // published before, is brought up to date).
  pub.create_filesystem = ShouldCreateFilesystem(pub.mode);
  auto opened = OpenPublishTarget(d_.kubelet, target, pub.mode);
  Status check = opened.status();
  if (check.ok()) {
    // Never take over another volume's descriptor at the same target.
    auto existing = d_.mount_info.Read(target);
    if (!existing.ok()) {
      check = existing.status();
    } else if (*existing && (*existing)->metadata["cocostorage.dev/volumeId"] != id) {
      check = absl::FailedPreconditionError(
          Cat("target_path ", Echo(target), " already carries a direct volume of another volume"));
    }
  }
  COCO_RETURN_IF_ERROR(check);
  r->targets[target] = pub;
  // Record first (commit point), then the target and the descriptor; a retry
  // after a crash in between rewrites both.
  COCO_RETURN_IF_ERROR(d_.store.Save(*r));
  committed = true;
  COCO_RETURN_IF_ERROR(CreateTarget(*opened, pub.mode));
  COCO_RETURN_IF_ERROR(d_.mount_info.Write(target, BuildMountInfo(*r, pub)));
  log::Info("volume.published",
            {{"volume", id}, {"target", target}, {"mode", VolumeModeName(pub.mode)}, {"inline", r->inline_ephemeral}});
  return OkStatus();
}

grpc::Status NodeService::NodeUnpublishVolume(grpc::ServerContext*, const pb::NodeUnpublishVolumeRequest* req,
                                              pb::NodeUnpublishVolumeResponse*) {
  return Reply("NodeUnpublishVolume", req->volume_id(), DoUnpublish(*req));
}

Status NodeService::DoUnpublish(const pb::NodeUnpublishVolumeRequest& req) {
  if (req.volume_id().empty()) return absl::InvalidArgumentError("volume_id is required");
  COCO_RETURN_IF_ERROR(ValidateRequestPath(req.target_path(), "target_path"));
  COCO_RETURN_IF_ERROR(d_.kubelet.CheckWithin(req.target_path(), "target_path"));
  COCO_RETURN_IF_ERROR(KataVolumeDirName(req.target_path()).status());
  Status valid = ValidateVolumeId(req.volume_id());
  if (absl::IsNotFound(valid)) return OkStatus();  // cannot be published
  COCO_RETURN_IF_ERROR(valid);
  const std::string& id = req.volume_id();
  const std::string& target = req.target_path();
  auto target_guard = d_.target_locks.Lock(target);  // always before the volume lock
  auto guard = d_.locks.Lock(id);
  COCO_ASSIGN_OR_RETURN(std::optional<VolumeRecord> r, d_.store.Load(id));
  const bool recorded = r && r->targets.count(target) != 0;
  // A descriptor at this target that names this volume is ours to remove,
  // even without a record (a publish interrupted before its commit).
  COCO_ASSIGN_OR_RETURN(std::optional<MountInfo> existing, d_.mount_info.Read(target));
  const bool descriptor_ours = existing && existing->metadata["cocostorage.dev/volumeId"] == id;
  if (!recorded && !descriptor_ours) return OkStatus();  // not published there
  COCO_RETURN_IF_ERROR(d_.mount_info.Remove(target));
  // A missing parent means the target is gone too; a symlink on the way is
  // refused (FAILED_PRECONDITION): we never remove anything through one.
  auto opened = d_.kubelet.Open(target);
  if (!opened.ok() && !absl::IsNotFound(opened.status())) return opened.status();
  if (opened.ok()) COCO_RETURN_IF_ERROR(RemoveTarget(*opened));
  if (!r) return OkStatus();
  r->targets.erase(target);
  if (r->inline_ephemeral && r->targets.empty()) {
    COCO_RETURN_IF_ERROR(d_.backend.Delete(id));
    COCO_RETURN_IF_ERROR(d_.store.Remove(id));
    d_.ledger.Release(id);
    log::Info("volume.deleted", {{"volume", id}, {"inline", true}});
    return OkStatus();
  }
  COCO_RETURN_IF_ERROR(d_.store.Save(*r));
  log::Info("volume.unpublished", {{"volume", id}, {"target", target}});
  return OkStatus();
}

grpc::Status NodeService::NodeGetVolumeStats(grpc::ServerContext*, const pb::NodeGetVolumeStatsRequest* req,
                                             pb::NodeGetVolumeStatsResponse* resp) {
  Status s = DoStats(*req, resp);
  if (!s.ok()) return Reply("NodeGetVolumeStats", req->volume_id(), s);
  return grpc::Status::OK;
}

Status NodeService::DoStats(const pb::NodeGetVolumeStatsRequest& req, pb::NodeGetVolumeStatsResponse* resp) {
  // The volume is judged before the path: a path that is not exactly one we
  // recorded (whatever its form) is NOT_FOUND, as the spec's table says.
  if (req.volume_id().empty()) return absl::InvalidArgumentError("volume_id is required");
  if (req.volume_path().empty()) return absl::InvalidArgumentError("volume_path is required");
  COCO_RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  const std::string& id = req.volume_id();
  COCO_ASSIGN_OR_RETURN(std::optional<VolumeRecord> r, d_.store.Load(id));
  if (!r) return absl::NotFoundError(Cat("volume ", id, " does not exist"));
  const std::string& path = req.volume_path();
  bool known = r->targets.count(path) != 0 || (r->staged && r->staged->path == path);
  if (!known || !PathExists(d_.kubelet, path)) {
    return absl::NotFoundError(Cat("volume ", id, " is not staged or published at ", Echo(path)));
  }
  auto* usage = resp->add_usage();
  usage->set_unit(pb::VolumeUsage::BYTES);
  usage->set_total(r->capacity_bytes);
  auto* cond = resp->mutable_volume_condition();
  // RBD: with the plugin's own credentials (this call carries no secrets);
  // without them the backing is not looked at, which is no abnormality.
  auto backend = d_.backend.Scoped(r->params, {});
  if (!backend.ok() && absl::IsFailedPrecondition(backend.status())) {
    usage->set_used(0);
    usage->set_available(r->capacity_bytes);
    cond->set_abnormal(false);
    cond->set_message(Cat("backing not checked: ", backend.status().message()));
    return OkStatus();
  }
  auto info = backend.ok() ? (*backend)->Stat(id) : StatusOr<BackingInfo>(backend.status());
  if (!info.ok()) {
    cond->set_abnormal(true);
    cond->set_message(Cat("backing store: ", info.status().message()));
    return OkStatus();
  }
  // Host view: bytes the guest has written (ciphertext and integrity tags
  // included); the guest sees its own file system usage.
  int64_t used = info->allocated_bytes < r->capacity_bytes ? info->allocated_bytes : r->capacity_bytes;
  usage->set_used(used);
  usage->set_available(r->capacity_bytes - used);
  if (info->size_bytes < r->capacity_bytes) {
    cond->set_abnormal(true);
    cond->set_message(Cat("backing store holds ", info->size_bytes, " bytes, expected ", r->capacity_bytes));
  } else {
    cond->set_abnormal(false);
    cond->set_message("ok");
  }
  return OkStatus();
}

grpc::Status NodeService::NodeExpandVolume(grpc::ServerContext*, const pb::NodeExpandVolumeRequest* req,
                                           pb::NodeExpandVolumeResponse* resp) {
  return Reply("NodeExpandVolume", req->volume_id(), DoExpand(*req, resp));
}

Status NodeService::DoExpand(const pb::NodeExpandVolumeRequest& req, pb::NodeExpandVolumeResponse* resp) {
  // The host never touches the file system: growing it is the guest's job at
  // the next activation. This answers with the size the device now has.
  // Volume first, then the path (see DoStats).
  if (req.volume_id().empty()) return absl::InvalidArgumentError("volume_id is required");
  if (req.volume_path().empty()) return absl::InvalidArgumentError("volume_path is required");
  std::optional<Capability> cap;
  if (req.has_volume_capability()) {
    COCO_ASSIGN_OR_RETURN(cap, ParseCapability(req.volume_capability()));
  }
  COCO_RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  COCO_ASSIGN_OR_RETURN(std::optional<VolumeRecord> r, d_.store.Load(req.volume_id()));
  if (!r) return absl::NotFoundError(Cat("volume ", req.volume_id(), " does not exist"));
  const std::string& path = req.volume_path();
  if (r->targets.count(path) == 0 && !(r->staged && r->staged->path == path)) {
    return absl::NotFoundError(Cat("volume ", r->id, " is not staged or published at ", Echo(path)));
  }
  if (cap) COCO_RETURN_IF_ERROR(CheckCapabilityFits(*r, *cap, absl::StatusCode::kInvalidArgument));
  const int64_t required = req.capacity_range().required_bytes();
  const int64_t limit = req.capacity_range().limit_bytes();
  if (required < 0 || limit < 0) return absl::InvalidArgumentError("capacity_range values must not be negative");
  if (required > r->capacity_bytes) {
    return absl::OutOfRangeError(
        Cat("volume ", r->id, " has ", r->capacity_bytes, " bytes; expand it with ControllerExpandVolume first"));
  }
  resp->set_capacity_bytes(r->capacity_bytes);
  return OkStatus();
}

grpc::Status NodeService::NodeGetCapabilities(grpc::ServerContext*, const pb::NodeGetCapabilitiesRequest*,
                                              pb::NodeGetCapabilitiesResponse* resp) {
  using T = pb::NodeServiceCapability::RPC;
  for (auto t : {T::STAGE_UNSTAGE_VOLUME, T::GET_VOLUME_STATS, T::VOLUME_CONDITION, T::SINGLE_NODE_MULTI_WRITER,
                 T::VOLUME_MOUNT_GROUP}) {
    resp->add_capabilities()->mutable_rpc()->set_type(t);
  }
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetInfo(grpc::ServerContext*, const pb::NodeGetInfoRequest*,
                                      pb::NodeGetInfoResponse* resp) {
  resp->set_node_id(d_.node_id);
  resp->set_max_volumes_per_node(d_.max_volumes_per_node);
  (*resp->mutable_accessible_topology()->mutable_segments())[kTopologyKey] = d_.node_id;
  return grpc::Status::OK;
}

}  // namespace cocostorage::csi
