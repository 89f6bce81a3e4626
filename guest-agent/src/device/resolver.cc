#include "device/resolver.h"

#include <blkid/blkid.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "core/text.h"

namespace cocostorage::agent {
namespace {

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::string ReadTrimmed(const std::string& path) {
  auto s = ReadFileToString(path, 4096);
  return s.ok() ? std::string(TrimWhitespace(*s)) : std::string();
}

bool IsWholeVirtioDisk(std::string_view name) {
  return name.size() >= 3 && name.substr(0, 2) == "vd" && CharsAre(name.substr(2), 1, 3, IsLower);
}

// A SCSI disk (sdX, the whole disk: partitions are sdX1...), as Kata's
// default virtio-scsi driver presents a hot-plugged volume.
bool IsWholeScsiDisk(std::string_view name) {
  return name.size() >= 3 && name.substr(0, 2) == "sd" && CharsAre(name.substr(2), 1, 3, IsLower);
}

// "0000:00:02.0" -> slot "02" (function 0 only).
bool PciAddressSlot(std::string_view e, std::string* slot) {
  if (e.size() != 12 || e[4] != ':' || e[7] != ':' || e[10] != '.' || e[11] != '0') return false;
  if (!CharsAre(e.substr(0, 4), 4, 4, IsLowerHex) || !CharsAre(e.substr(5, 2), 2, 2, IsLowerHex) ||
      !CharsAre(e.substr(8, 2), 2, 2, IsLowerHex)) {
    return false;
  }
  *slot = std::string(e.substr(8, 2));
  return true;
}

// Open errors that a disk shows while the hot-plug is still settling: the
// kernel holds it for the partition scan (EBUSY), or the gendisk is not live
// yet / the node was just replaced (ENXIO, ENODEV, ENOENT).
bool TransientOpenError(int err) { return err == EBUSY || err == ENXIO || err == ENODEV || err == ENOENT; }

bool IsPciPath(std::string_view v) {
  // [0-9a-f]{2}(/[0-9a-f]{2}){0,3}
  if (v.size() < 2 || v.size() > 11 || (v.size() + 1) % 3 != 0) return false;
  for (size_t i = 0; i < v.size(); i += 3) {
    if (!IsLowerHex(v[i]) || !IsLowerHex(v[i + 1])) return false;
    if (i + 2 < v.size() && v[i + 2] != '/') return false;
  }
  return true;
}

bool IsDevNumber(std::string_view v) {
  auto colon = v.find(':');
  return colon != std::string_view::npos && IsDecimal(v.substr(0, colon), 4) && IsDecimal(v.substr(colon + 1), 7);
}

}  // namespace

std::string BlockDevice::DevNumber() const { return Cat(major, ":", minor); }

Status ValidateDeviceId(const DeviceId& id) {
  switch (id.kind) {
    case DeviceIdKind::kPciPath:
      if (!IsPciPath(id.value)) {
        return absl::InvalidArgumentError(Cat("malformed PCI path ", Quoted(id.value), " (want e.g. \"02/00\")"));
      }
      return OkStatus();
    case DeviceIdKind::kSerial:
      if (!CharsAre(id.value, 1, 20, [](char c) { return IsAlnum(c) || c == '_' || c == '.' || c == '-'; })) {
        return absl::InvalidArgumentError(Cat("malformed virtio serial ", Quoted(id.value)));
      }
      return OkStatus();
    case DeviceIdKind::kDevNumber:
      if (!IsDevNumber(id.value)) {
        return absl::InvalidArgumentError(Cat("malformed device number ", Quoted(id.value), " (want MAJ:MIN)"));
      }
      return OkStatus();
  }
  return absl::InvalidArgumentError("unknown device id kind");
}

WaitClock WaitClock::Real() {
  return {[] { return std::chrono::steady_clock::now(); },
          [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); }};
}

SysfsDeviceResolver::SysfsDeviceResolver(std::string sysfs_root, std::string dev_root, WaitClock clock,
                                         ExclusiveProbeFn probe)
    : sysfs_(std::move(sysfs_root)), dev_(std::move(dev_root)), clock_(std::move(clock)), probe_(std::move(probe)) {
  if (!probe_) {
    probe_ = [](const std::string& path) {
      int fd = open(path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
      if (fd < 0) return errno;
      close(fd);
      return 0;
    };
  }
}

StatusOr<BlockDevice> SysfsDeviceResolver::WaitFor(const DeviceId& id, std::chrono::milliseconds timeout,
                                                   const CancelFn& cancelled) {
  COCO_RETURN_IF_ERROR(ValidateDeviceId(id));
  constexpr auto kPoll = std::chrono::milliseconds(50);
  // Elapsed time on the steady clock, not a count of sleeps: a loaded guest
  // oversleeps, and the caller's deadline is what it asked for.
  const auto deadline = clock_.now() + timeout;
  while (true) {
    Probe probe;
    COCO_ASSIGN_OR_RETURN(std::optional<BlockDevice> dev, LookupOnce(id, &probe));
    if (dev) return *dev;
    if (cancelled && cancelled()) {
      return absl::CancelledError(Cat("gave up waiting for the device with ", id.Describe(), ": the caller left"));
    }
    const auto now = clock_.now();
    if (now >= deadline) {
      if (probe.last_errno == EBUSY) {
        return absl::FailedPreconditionError(
            Cat("device with ", id.Describe(), " exists but stays busy: it is in use (mounted or mapped)"));
      }
      if (probe.last_errno != 0) {
        return absl::DeadlineExceededError(Cat("device with ", id.Describe(), " did not become ready within ",
                                               timeout.count(), " ms (open: ", std::strerror(probe.last_errno), ")"));
      }
      return absl::DeadlineExceededError(
          Cat("device with ", id.Describe(), " did not appear within ", timeout.count(), " ms"));
    }
    clock_.sleep(std::min<std::chrono::milliseconds>(
        kPoll, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) + std::chrono::milliseconds(1)));
  }
}

StatusOr<uint64_t> SysfsDeviceResolver::SectorsWritten(const BlockDevice& dev) {
  COCO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(Cat(sysfs_, "/block/", dev.name, "/stat"), 4096));
  auto fields = Split(text, ' ');
  unsigned long long v = 0;
  if (fields.size() > 6 && ParseUint64(fields[6], &v)) return v;
  return absl::InternalError(Cat("unexpected format of /sys/block/", dev.name, "/stat"));
}

StatusOr<bool> SysfsDeviceResolver::HasHolders(const BlockDevice& dev) {
  return !ListDir(Cat(sysfs_, "/block/", dev.name, "/holders")).empty();
}

StatusOr<std::string> SysfsDeviceResolver::ProbeSignature(const BlockDevice& dev) {
  blkid_probe pr = blkid_new_probe_from_filename(dev.dev_path.c_str());
  if (pr == nullptr) return ErrnoStatus(errno ? errno : EIO, Cat("probing ", dev.dev_path));
  std::unique_ptr<std::remove_pointer_t<blkid_probe>, decltype(&blkid_free_probe)> owner(pr, &blkid_free_probe);
  blkid_probe_enable_superblocks(pr, 1);
  blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE);
  blkid_probe_enable_partitions(pr, 1);
  blkid_probe_set_partitions_flags(pr, BLKID_PARTS_MAGIC);
  const int rc = blkid_do_safeprobe(pr);
  if (rc == 1) return std::string();              // nothing recognised
  if (rc == -2) return std::string("ambiguous");  // more than one signature
  if (rc < 0) return absl::InternalError(Cat("libblkid could not probe ", dev.dev_path));
  const char* value = nullptr;
  if (blkid_probe_lookup_value(pr, "TYPE", &value, nullptr) == 0 && value != nullptr) return std::string(value);
  if (blkid_probe_lookup_value(pr, "PTTYPE", &value, nullptr) == 0 && value != nullptr) return std::string(value);
  return std::string("unknown");
}

StatusOr<std::optional<BlockDevice>> SysfsDeviceResolver::LookupOnce(const DeviceId& id, Probe* probe) {
  std::optional<std::string> name;
  switch (id.kind) {
    case DeviceIdKind::kPciPath: {
      COCO_ASSIGN_OR_RETURN(name, FindByPciPath(id.value));
      break;
    }
    case DeviceIdKind::kSerial: {
      COCO_ASSIGN_OR_RETURN(name, FindBySerial(id.value));
      break;
    }
    case DeviceIdKind::kDevNumber: {
      COCO_ASSIGN_OR_RETURN(name, FindByDevNumber(id.value));
      break;
    }
  }
  if (!name) return std::optional<BlockDevice>();
  return Describe(*name, probe);
}

StatusOr<std::optional<std::string>> SysfsDeviceResolver::FindByPciPath(const std::string& path) {
  std::string dir = Cat(sysfs_, "/devices/pci0000:00");
  for (const auto& slot : Split(path, '/')) {
    std::string next;
    for (const auto& entry : ListDir(dir)) {
      std::string s;
      if (PciAddressSlot(entry, &s) && s == slot) {
        next = Cat(dir, "/", entry);
        break;
      }
    }
    if (next.empty()) return std::optional<std::string>();
    dir = next;
  }
  // The endpoint: a virtio device whose driver exposes block/<name>.
  for (const auto& entry : ListDir(dir)) {
    if (entry.rfind("virtio", 0) != 0) continue;
    for (const auto& blk : ListDir(Cat(dir, "/", entry, "/block"))) {
      if (!IsWholeVirtioDisk(blk)) {
        return absl::FailedPreconditionError(Cat("PCI path ", path, " leads to ", blk, ", not a virtio disk"));
      }
      return std::optional<std::string>(blk);
    }
  }
  return std::optional<std::string>();
}

StatusOr<std::optional<std::string>> SysfsDeviceResolver::FindBySerial(const std::string& serial) {
  for (const auto& name : ListDir(Cat(sysfs_, "/block"))) {
    if (!IsWholeVirtioDisk(name)) continue;
    if (ReadTrimmed(Cat(sysfs_, "/block/", name, "/serial")) == serial) return std::optional<std::string>(name);
  }
  return std::optional<std::string>();
}

StatusOr<std::optional<std::string>> SysfsDeviceResolver::FindByDevNumber(const std::string& devno) {
  std::string link = Cat(sysfs_, "/dev/block/", devno);
  char buf[4096];
  ssize_t n = readlink(link.c_str(), buf, sizeof(buf) - 1);
  if (n < 0) return std::optional<std::string>();
  buf[n] = '\0';
  std::string target = buf;
  std::string name = target.substr(target.rfind('/') + 1);
  if (!IsWholeVirtioDisk(name) && !IsWholeScsiDisk(name)) {
    return absl::FailedPreconditionError(Cat("device ", devno, " is ", name, ", not a whole virtio-blk or SCSI disk"));
  }
  return std::optional<std::string>(name);
}

StatusOr<std::optional<BlockDevice>> SysfsDeviceResolver::Describe(const std::string& name, Probe* probe) {
  std::string base = Cat(sysfs_, "/block/", name);
  if (access(Cat(base, "/partition").c_str(), F_OK) == 0) {
    return absl::FailedPreconditionError(Cat(name, " is a partition, not a whole disk"));
  }
  BlockDevice dev;
  dev.name = name;
  dev.dev_path = Cat(dev_, "/", name);
  unsigned long long sectors = 0;
  // Size 0 or no dev file yet: the hot-plug is still in progress.
  if (!ParseUint64(ReadTrimmed(Cat(base, "/size")), &sectors) || sectors == 0) return std::optional<BlockDevice>();
  dev.size_bytes = sectors * 512;
  auto parts = Split(ReadTrimmed(Cat(base, "/dev")), ':');
  unsigned long long maj = 0, min = 0;
  if (parts.size() != 2 || !ParseUint64(parts[0], &maj) || !ParseUint64(parts[1], &min)) {
    return std::optional<BlockDevice>();
  }
  dev.major = static_cast<unsigned>(maj);
  dev.minor = static_cast<unsigned>(min);
  dev.serial = ReadTrimmed(Cat(base, "/serial"));
  struct stat st {};
  if (stat(dev.dev_path.c_str(), &st) != 0) return std::optional<BlockDevice>();  // devtmpfs node not there yet
  if (!S_ISBLK(st.st_mode) || ::major(st.st_rdev) != dev.major || ::minor(st.st_rdev) != dev.minor) {
    return absl::FailedPreconditionError(Cat(dev.dev_path, " is not the block device ", dev.DevNumber()));
  }
  // Right after a hot-plug the kernel holds the new disk exclusively while it
  // scans for partitions; formatting then fails. Ready means we could claim it.
  int err = probe_(dev.dev_path);
  if (probe != nullptr) probe->last_errno = err;
  if (TransientOpenError(err)) return std::optional<BlockDevice>();
  if (err != 0) return ErrnoStatus(err, Cat("opening ", dev.dev_path));
  return std::optional<BlockDevice>(dev);
}

}  // namespace cocostorage::agent
