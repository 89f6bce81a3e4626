#include "rbd_mapper.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "cocostorage/common/strings.h"

namespace cocostorage::csi {
namespace {

constexpr std::string_view kRefPrefix = "rbd:";

std::string Key(const RbdImageRef& ref) { return Cat(ref.pool, "/", ref.image); }

class KrbdMapper : public RbdMapper {
 public:
  KrbdMapper(std::shared_ptr<CommandRunner> runner, std::chrono::seconds timeout, std::string rbd_sysfs)
      : runner_(std::move(runner)), timeout_(timeout), rbd_sysfs_(std::move(rbd_sysfs)) {}

  StatusOr<std::string> Map(const RbdOptions& cluster, const RbdImageRef& ref) override {
    COCO_RETURN_IF_ERROR(ValidateRbdOptions(cluster));
    COCO_RETURN_IF_ERROR(EnsureModule());
    COCO_ASSIGN_OR_RETURN(std::string existing, MappedDevice(ref));
    if (!existing.empty()) return existing;
    // --exclusive: the kernel client takes the image's exclusive lock at map
    // time and never hands it over, so a second node's map of an image that
    // is in use fails instead of two VMs writing one file system
    // (krbd's default gives the lock to whoever asks).
    COCO_ASSIGN_OR_RETURN(CommandResult r, Run({"device", "map", "--exclusive", Key(ref)}, &cluster));
    const std::string what = Cat("rbd device map ", Key(ref));
    if (r.exit_code != 0) return RbdCommandStatus(r.exit_code, Scrubbed(r.err, cluster.key), what);
    // rbd prints the device on the last line of stdout.
    std::string out = r.out;
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    auto nl = out.rfind('\n');
    std::string dev = nl == std::string::npos ? out : out.substr(nl + 1);
    if (dev.rfind("/dev/rbd", 0) != 0) {
      return absl::InternalError(Cat(what, " printed no /dev/rbd device"));
    }
    return dev;
  }

  Status Unmap(const RbdImageRef& ref) override {
    COCO_ASSIGN_OR_RETURN(std::string dev, MappedDevice(ref));
    if (dev.empty()) return OkStatus();
    // By device, not by name: the list just said which device is this image.
    COCO_ASSIGN_OR_RETURN(CommandResult r, Run({"device", "unmap", dev}, nullptr));
    if (r.exit_code != 0)
      return RbdCommandStatus(r.exit_code, r.err, Cat("rbd device unmap ", dev, " (", Key(ref), ")"));
    return OkStatus();
  }

  StatusOr<std::string> MappedDevice(const RbdImageRef& ref) override {
    COCO_ASSIGN_OR_RETURN(CommandResult r, Run({"device", "list", "--format", "json"}, nullptr));
    if (r.exit_code != 0) return RbdCommandStatus(r.exit_code, r.err, "rbd device list");
    return MappedDeviceFromList(r.out, ref);
  }

 private:
  // Without the module rbd fails with ENOENT, which would read as "no such
  // volume" (NOT_FOUND); it is the node that lacks something. modprobe first
  // (the chart mounts the host's /lib/modules), as rbd itself would.
  Status EnsureModule() {
    struct stat st {};
    if (rbd_sysfs_.empty() || stat(rbd_sysfs_.c_str(), &st) == 0) return OkStatus();
    CommandSpec spec;
    spec.argv = {"modprobe", "rbd"};
    spec.timeout = std::chrono::seconds(30);
    auto r = runner_->Run(spec);
    if (r.ok() && r->exit_code == 0 && stat(rbd_sysfs_.c_str(), &st) == 0) return OkStatus();
    return absl::FailedPreconditionError(Cat("this node cannot map RBD images: ", rbd_sysfs_,
                                             " is missing and `modprobe rbd` did not load the rbd kernel module"));
  }

  // What rbd printed, without the key (should a Ceph message ever quote it).
  static std::string Scrubbed(std::string text, const std::string& key) {
    if (key.empty()) return text;
    for (auto at = text.find(key); at != std::string::npos; at = text.find(key, at))
      text.replace(at, key.size(), "<key>");
    return text;
  }

  // `cluster` only for map: list and unmap are the kernel's (sysfs), they
  // reach no monitor and need no key.
  StatusOr<CommandResult> Run(std::vector<std::string> tail, const RbdOptions* cluster) {
    CommandSpec spec;
    spec.argv = {"rbd", "-c", "/dev/null"};
    std::chrono::seconds t = timeout_;
    if (cluster != nullptr) {
      t = cluster->timeout;
      const std::string ts = Cat(t.count());
      for (std::string a : {std::string("-m"), cluster->mon_host, std::string("--id"), cluster->user,
                            std::string("--client-mount-timeout"), ts, std::string("--rados-mon-op-timeout"), ts,
                            std::string("--rados-osd-op-timeout"), ts}) {
        spec.argv.push_back(std::move(a));
      }
      spec.env = {Cat("CEPH_ARGS=--key=", cluster->key)};
    }
    for (auto& a : tail) spec.argv.push_back(std::move(a));
    // Connect + one op, each bounded by the timeout, plus a margin; the
    // runner kills rbd after that.
    spec.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(3 * t + std::chrono::seconds(5));
    return runner_->Run(spec);
  }

  std::shared_ptr<CommandRunner> runner_;
  const std::chrono::seconds timeout_;
  const std::string rbd_sysfs_;
};

}  // namespace

StatusOr<RbdImageRef> ParseRbdDeviceRef(std::string_view ref) {
  if (ref.substr(0, kRefPrefix.size()) != kRefPrefix) {
    return absl::InvalidArgumentError("not an RBD device reference (rbd:<pool>/<image>)");
  }
  ref.remove_prefix(kRefPrefix.size());
  auto slash = ref.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == ref.size() ||
      ref.find_first_of("/@ \t\n", slash + 1) != std::string_view::npos) {
    return absl::InvalidArgumentError("an RBD device reference is rbd:<pool>/<image>, no snapshot, no namespace");
  }
  return RbdImageRef{std::string(ref.substr(0, slash)), std::string(ref.substr(slash + 1))};
}

StatusOr<std::string> MappedDeviceFromList(std::string_view list_json, const RbdImageRef& ref) {
  auto j = nlohmann::json::parse(list_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_array()) return absl::InternalError("rbd device list did not answer a JSON array");
  for (const auto& e : j) {
    if (!e.is_object()) continue;
    // A snapshot mapping ("snap" other than "-") or one in a namespace is not
    // the image's writable head: never hand that to a guest as the volume.
    if (e.value("pool", "") != ref.pool || e.value("name", "") != ref.image || e.value("snap", "-") != "-" ||
        !e.value("namespace", "").empty()) {
      continue;
    }
    std::string dev = e.value("device", "");
    if (dev.rfind("/dev/rbd", 0) != 0) return absl::InternalError(Cat("rbd device list: ", Key(ref), " has no device"));
    return dev;
  }
  return std::string();
}

Status RbdCommandStatus(int exit_code, std::string_view stderr_text, std::string_view what) {
  // rbd reports "rbd: map failed: (13) Permission denied" and the like; the
  // last "(N)" is the errno of the failure.
  auto open = stderr_text.rfind('(');
  while (open != std::string_view::npos) {
    auto close = stderr_text.find(')', open);
    if (close != std::string_view::npos && close > open + 1) {
      std::string num(stderr_text.substr(open + 1, close - open - 1));
      char* end = nullptr;
      long n = std::strtol(num.c_str(), &end, 10);
      if (end != nullptr && *end == '\0' && n > 0 && n < 4096) return RbdStatus(static_cast<int>(-n), what);
    }
    if (open == 0) break;
    open = stderr_text.rfind('(', open - 1);
  }
  if (stderr_text.find("couldn't connect to the cluster") != std::string_view::npos) {
    // rbd exits with the connect's errno: 13 for a key cephx refused, 110
    // for monitors that did not answer within the mount timeout. Exit 1 is
    // rbd's generic failure, not EPERM.
    if (exit_code > 1 && exit_code < 4096) return RbdStatus(-exit_code, what);
    return RbdStatus(-ETIMEDOUT, what);
  }
  // No errno: the last line of stderr, which names no key (the key is only in
  // the child's environment).
  std::string_view tail = stderr_text;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.remove_suffix(1);
  auto nl = tail.rfind('\n');
  if (nl != std::string_view::npos) tail.remove_prefix(nl + 1);
  return absl::InternalError(Cat(what, " failed", tail.empty() ? "" : ": ", tail));
}

StatusOr<std::unique_ptr<RbdMapper>> NewKrbdMapper(std::shared_ptr<CommandRunner> runner, std::chrono::seconds timeout,
                                                   std::string rbd_sysfs) {
  if (runner == nullptr) return absl::InvalidArgumentError("NewKrbdMapper: no command runner");
  if (timeout.count() <= 0 || timeout.count() > 300) {
    return absl::InvalidArgumentError("NewKrbdMapper: the timeout must be between 1 and 300 seconds");
  }
  return std::unique_ptr<RbdMapper>(std::make_unique<KrbdMapper>(std::move(runner), timeout, std::move(rbd_sysfs)));
}

}  // namespace cocostorage::csi
