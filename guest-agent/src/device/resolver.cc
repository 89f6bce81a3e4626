#include "device/resolver.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <regex>
#include <thread>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"

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

bool IsWholeVirtioDisk(const std::string& name) { return std::regex_match(name, std::regex("vd[a-z]{1,3}")); }

// "0000:00:02.0" -> slot "02", function "0".
bool PciAddressSlot(const std::string& entry, std::string* slot) {
  static const std::regex re("[0-9a-f]{4}:[0-9a-f]{2}:([0-9a-f]{2})\\.0");
  std::smatch m;
  if (!std::regex_match(entry, m, re)) return false;
  *slot = m[1];
  return true;
}

}  // namespace

std::string BlockDevice::DevNumber() const { return Cat(major, ":", minor); }

Status ValidateDeviceId(const DeviceId& id) {
  switch (id.kind) {
    case DeviceIdKind::kPciPath:
      if (!std::regex_match(id.value, std::regex("[0-9a-f]{2}(/[0-9a-f]{2}){0,3}"))) {
        return absl::InvalidArgumentError(Cat("malformed PCI path \"", id.value, "\" (want e.g. \"02/00\")"));
      }
      return OkStatus();
    case DeviceIdKind::kSerial:
      if (!std::regex_match(id.value, std::regex("[A-Za-z0-9_.-]{1,20}"))) {
        return absl::InvalidArgumentError(Cat("malformed virtio serial \"", id.value, "\""));
      }
      return OkStatus();
    case DeviceIdKind::kDevNumber:
      if (!std::regex_match(id.value, std::regex("[0-9]{1,4}:[0-9]{1,7}"))) {
        return absl::InvalidArgumentError(Cat("malformed device number \"", id.value, "\" (want MAJ:MIN)"));
      }
      return OkStatus();
  }
  return absl::InvalidArgumentError("unknown device id kind");
}

SysfsDeviceResolver::SysfsDeviceResolver(std::string sysfs_root, std::string dev_root, SleepFn sleep,
                                         ExclusiveProbeFn probe)
    : sysfs_(std::move(sysfs_root)), dev_(std::move(dev_root)), sleep_(std::move(sleep)), probe_(std::move(probe)) {
  if (!sleep_) sleep_ = [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); };
  if (!probe_) {
    probe_ = [](const std::string& path) {
      int fd = open(path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
      if (fd < 0) return errno;
      close(fd);
      return 0;
    };
  }
}

StatusOr<BlockDevice> SysfsDeviceResolver::WaitFor(const DeviceId& id, std::chrono::milliseconds timeout) {
  COCO_RETURN_IF_ERROR(ValidateDeviceId(id));
  constexpr auto kPoll = std::chrono::milliseconds(50);
  std::chrono::milliseconds waited{0};
  last_busy_ = false;
  while (true) {
    COCO_ASSIGN_OR_RETURN(std::optional<BlockDevice> dev, LookupOnce(id));
    if (dev) return *dev;
    if (waited >= timeout) {
      if (last_busy_) {
        return absl::FailedPreconditionError(
            Cat("device with ", id.Describe(), " exists but stays busy: it is in use (mounted or mapped)"));
      }
      return absl::DeadlineExceededError(
          Cat("device with ", id.Describe(), " did not appear within ", timeout.count(), " ms"));
    }
    sleep_(kPoll);
    waited += kPoll;
  }
}

StatusOr<std::optional<BlockDevice>> SysfsDeviceResolver::LookupOnce(const DeviceId& id) {
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
  return Describe(*name);
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
  if (!IsWholeVirtioDisk(name)) {
    return absl::FailedPreconditionError(Cat("device ", devno, " is ", name, ", not a whole virtio disk"));
  }
  return std::optional<std::string>(name);
}

StatusOr<std::optional<BlockDevice>> SysfsDeviceResolver::Describe(const std::string& name) {
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
  last_busy_ = err == EBUSY;
  if (err == EBUSY) return std::optional<BlockDevice>();
  if (err != 0) return ErrnoStatus(err, Cat("opening ", dev.dev_path));
  return std::optional<BlockDevice>(dev);
}

}  // namespace cocostorage::agent
