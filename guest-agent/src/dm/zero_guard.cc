#include "dm/zero_guard.h"

#include <optional>
#include <sstream>
#include <vector>

#include "cocostorage/common/strings.h"

namespace cocostorage::agent {

StatusOr<GuardLayout> ComputeGuardLayout(uint64_t data_bytes) {
  constexpr uint64_t kMinBlock = 64 * 1024;
  constexpr uint64_t kMaxBlocks = 1ull << 20;
  if (data_bytes < kMinBlock * 16) {
    return absl::FailedPreconditionError(Cat("encrypted device of ", data_bytes, " bytes is too small for the guard"));
  }
  uint64_t block = kMinBlock;
  while (data_bytes / block > kMaxBlocks) block *= 2;
  GuardLayout l;
  l.block_sectors = block / 512;
  l.nr_blocks = data_bytes / block;
  l.volume_sectors = l.nr_blocks * l.block_sectors;
  // dm-thin needs about 64 bytes per mapped block in the worst case; double it
  // for btree slack plus a fixed 4 MiB for superblock and space maps.
  uint64_t meta = l.nr_blocks * 128 + (4ull << 20);
  l.meta_bytes = (meta + 4095) / 4096 * 4096;
  return l;
}

DmTarget ThinPoolTarget(const std::string& meta_dev, const std::string& data_dev, const GuardLayout& layout) {
  // <meta dev> <data dev> <block size> <low water mark> <#features> <features>
  return {0, layout.volume_sectors, "thin-pool",
          Cat(meta_dev, " ", data_dev, " ", layout.block_sectors, " 0 1 error_if_no_space")};
}

DmTarget ThinVolumeTarget(const std::string& pool_dev, const GuardLayout& layout) {
  return {0, layout.volume_sectors, "thin", Cat(pool_dev, " 0")};
}

Status CreateZeroGuard(const GuardDeps& deps, const GuardNames& names, const std::string& data_dev,
                       const GuardLayout& layout) {
  auto cleanup = [&](const Status& why) {
    (void)deps.dm->Remove(names.thin);
    (void)deps.dm->Remove(names.pool);
    (void)deps.files->Remove(names.meta_file);
    return why;
  };
  // A zeroed metadata device makes dm-thin format it on first load.
  if (Status s = deps.files->CreateSparse(names.meta_file, layout.meta_bytes); !s.ok()) return cleanup(s);
  auto loop = deps.loops->Attach(names.meta_file);
  if (!loop.ok()) return cleanup(loop.status());

  if (Status s = deps.dm->Create(names.pool, {ThinPoolTarget(loop->DevNumber(), data_dev, layout)}, false); !s.ok()) {
    return cleanup(s);
  }
  loop->fd.Reset();  // the pool holds the loop device now
  if (Status s = deps.dm->Message(names.pool, "create_thin 0"); !s.ok()) return cleanup(s);
  auto pool_info = deps.dm->Info(names.pool);
  if (!pool_info.ok()) return cleanup(pool_info.status());
  if (!*pool_info) return cleanup(absl::InternalError(Cat("pool ", names.pool, " vanished")));
  if (Status s = deps.dm->Create(names.thin, {ThinVolumeTarget((*pool_info)->DevNumber(), layout)}, false); !s.ok()) {
    return cleanup(s);
  }
  return OkStatus();
}

std::string TargetStatusProblem(const DmTarget& status) {
  std::vector<std::string> f;
  std::istringstream in(status.params);
  for (std::string w; in >> w;) f.push_back(w);
  if (status.type != "thin-pool" && status.type != "thin" && status.type != "integrity") return "";
  if (!f.empty() && (f[0] == "Fail" || f[0] == "Error")) {
    return Cat(status.type, " failed (status \"", f[0], "\"): its I/O fails until it is recreated");
  }
  if (status.type == "thin-pool") {
    // <transaction id> <meta used/total> <data used/total> <held root> <mode> <discard> <no-space> <needs_check> ...
    if (f.size() < 8) return Cat("thin-pool status unreadable: \"", status.params, "\"");
    std::vector<std::string> p;
    if (f[4] == "ro") p.push_back("read-only (metadata transaction aborted after an error)");
    if (f[4] == "out_of_data_space") p.push_back("out of data space");
    if (f[7] == "needs_check") p.push_back("needs_check");
    return p.empty() ? "" : Cat("thin-pool ", Join(p, ", "));
  }
  if (status.type == "integrity") {
    // <mismatches> <provided data sectors> <recalculate sector or ->
    if (!f.empty() && f[0] != "0") return Cat("dm-integrity reported ", f[0], " integrity mismatches");
  }
  return "";
}

Status RemoveZeroGuard(const GuardDeps& deps, const GuardNames& names) {
  COCO_RETURN_IF_ERROR(deps.dm->Remove(names.thin));
  COCO_RETURN_IF_ERROR(deps.dm->Remove(names.pool));
  return deps.files->Remove(names.meta_file);
}

StatusOr<GuardLayout> ComputePersistentGuardLayout(uint64_t crypt_bytes) {
  constexpr uint64_t MiB = 1ull << 20;
  COCO_ASSIGN_OR_RETURN(GuardLayout whole, ComputeGuardLayout(crypt_bytes));
  const uint64_t meta = (whole.meta_bytes + MiB - 1) / MiB * MiB;
  if (crypt_bytes <= meta) {
    return absl::FailedPreconditionError(Cat("encrypted device of ", crypt_bytes, " bytes is too small for the guard"));
  }
  COCO_ASSIGN_OR_RETURN(GuardLayout l, ComputeGuardLayout(crypt_bytes - meta));
  l.meta_bytes = meta;  // what the smaller data area needs is at most this
  return l;
}

Status OpenPersistentGuard(const GuardDeps& deps, const PersistentGuardNames& names, const std::string& crypt_dev,
                           const GuardLayout& layout, bool create) {
  auto cleanup = [&](const Status& why) {
    (void)RemovePersistentGuard(deps, names);
    return why;
  };
  const uint64_t meta_sectors = layout.meta_bytes / 512;
  auto dev_of = [&](const std::string& name) -> StatusOr<std::string> {
    COCO_ASSIGN_OR_RETURN(std::optional<DmInfo> info, deps.dm->Info(name));
    if (!info) return absl::InternalError(Cat("mapping ", name, " vanished"));
    return info->DevNumber();
  };
  if (Status s = deps.dm->Create(names.meta_linear, {{0, meta_sectors, "linear", Cat(crypt_dev, " 0")}}, false);
      !s.ok()) {
    return cleanup(s);
  }
  if (Status s = deps.dm->Create(names.data_linear,
                                 {{0, layout.volume_sectors, "linear", Cat(crypt_dev, " ", meta_sectors)}}, false);
      !s.ok()) {
    return cleanup(s);
  }
  auto meta_dev = dev_of(names.meta_linear);
  if (!meta_dev.ok()) return cleanup(meta_dev.status());
  auto data_dev = dev_of(names.data_linear);
  if (!data_dev.ok()) return cleanup(data_dev.status());
  if (Status s = deps.dm->Create(names.pool, {ThinPoolTarget(*meta_dev, *data_dev, layout)}, false); !s.ok()) {
    return cleanup(s);
  }
  if (!create) {
    auto st = deps.dm->TargetStatus(names.pool);
    if (!st.ok()) return cleanup(st.status());
    for (const auto& t : *st) {
      if (std::string p = TargetStatusProblem(t); !p.empty()) {
        return cleanup(absl::DataLossError(Cat("guard_metadata: the zero guard's pool opened with a problem: ", p)));
      }
    }
  }
  if (create) {
    if (Status s = deps.dm->Message(names.pool, "create_thin 0"); !s.ok()) return cleanup(s);
  }
  auto pool_dev = dev_of(names.pool);
  if (!pool_dev.ok()) return cleanup(pool_dev.status());
  if (Status s = deps.dm->Create(names.thin, {ThinVolumeTarget(*pool_dev, layout)}, false); !s.ok()) {
    return cleanup(s);
  }
  return OkStatus();
}

Status RemovePersistentGuard(const GuardDeps& deps, const PersistentGuardNames& names) {
  COCO_RETURN_IF_ERROR(deps.dm->Remove(names.thin));
  COCO_RETURN_IF_ERROR(deps.dm->Remove(names.pool));
  COCO_RETURN_IF_ERROR(deps.dm->Remove(names.data_linear));
  return deps.dm->Remove(names.meta_linear);
}

}  // namespace cocostorage::agent
