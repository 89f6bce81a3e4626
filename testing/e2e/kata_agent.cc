#include "kata_agent.h"

#include <algorithm>

#include "cocostorage/common/strings.h"

namespace cocostorage::e2e {
namespace {

bool Has(const std::vector<std::string>& v, std::string_view s) { return std::find(v.begin(), v.end(), s) != v.end(); }

bool IsHexByte(std::string_view s) {
  return s.size() == 2 &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool IsDecimal(std::string_view s) {
  return !s.empty() && s.size() <= 10 && s.find_first_not_of("0123456789") == std::string_view::npos;
}

// Single-quoted for the guest's sh: mount points carry '=', mkfs options '^'.
std::string ShellQuote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  return out + "'";
}

}  // namespace

Status KataAgentRoute(const KataStorage& storage) {
  const bool ephemeral = Has(storage.driver_options, kEphemeralKeyOption);
  const bool create_fs = Has(storage.driver_options, kCreateFilesystemOption);
  if (!ephemeral) {
    // kata-agent compares whole entries: "encryption_key=kbs:///..." or a
    // missing key both fall through to its ordinary (plaintext) mount.
    return absl::FailedPreconditionError(Cat("kata-agent would mount this in plaintext: driver_options [",
                                             Join(storage.driver_options, ", "), "] lack ", kEphemeralKeyOption));
  }
  if (!create_fs) {
    return absl::InvalidArgumentError(Cat("kata-agent refuses this storage: ", kEphemeralKeyOption, " requires ",
                                          kCreateFilesystemOption, " (driver_options [",
                                          Join(storage.driver_options, ", "), "])"));
  }
  return OkStatus();
}

std::map<std::string, std::string> KataSecureMountCall::Options() const {
  return {{"deviceId", device_id},
          {"sourceType", "empty"},
          {"targetType", "fileSystem"},
          {"filesystemType", fs_type},
          {"mkfsOpts", mkfs_opts},
          {"encryptionType", "luks2"},
          {"dataIntegrity", data_integrity ? "true" : "false"}};
}

std::string KataSecureMountCall::GuestCommand() const {
  return Cat("coco-kata-securemount -socket ", kCdhSocket, " -device ", ShellQuote(device_id), " -mount-point ",
             ShellQuote(mount_point), " -fs ", ShellQuote(fs_type), " -mkfs ", ShellQuote(mkfs_opts), " -integrity ",
             data_integrity ? "true" : "false");
}

StatusOr<KataSecureMountCall> SecureMountCallFor(const KataStorage& storage, const std::string& device_id) {
  COCO_RETURN_IF_ERROR(KataAgentRoute(storage));
  if (storage.driver != "blk") {
    return absl::UnimplementedError(
        Cat("the kata-agent stand-in resolves only \"blk\" (virtio-blk PCI) storages, not \"", storage.driver, "\""));
  }
  auto parts = Split(device_id, ':', /*skip_empty=*/false);
  if (parts.size() != 2 || !IsDecimal(parts[0]) || !IsDecimal(parts[1])) {
    return absl::InvalidArgumentError(Cat("device number \"", device_id, "\" is not MAJ:MIN"));
  }
  if (storage.mount_point.empty()) return absl::InvalidArgumentError("the Storage has no mount_point");
  KataSecureMountCall c;
  c.device_id = device_id;
  c.mount_point = storage.mount_point;
  c.fs_type = storage.fs_type;
  return c;
}

std::string SecureMountVolumeId(std::string_view mount_point) {
  while (mount_point.size() > 1 && mount_point.back() == '/') mount_point.remove_suffix(1);
  auto slash = mount_point.rfind('/');
  std::string_view last = slash == std::string_view::npos ? mount_point : mount_point.substr(slash + 1);
  while (!last.empty() && last.back() == '=') last.remove_suffix(1);
  return Cat("sm-", last);
}

StatusOr<std::string> PciPathToDevNumberScript(std::string_view pci_path, int timeout_ds) {
  auto slots = Split(pci_path, '/', /*skip_empty=*/false);
  if (slots.empty() || slots.size() > 4 || !std::all_of(slots.begin(), slots.end(), IsHexByte)) {
    return absl::InvalidArgumentError(Cat("PCI path \"", pci_path, "\" is not of the form \"02/00\""));
  }
  // Each slot but the last is a bridge: the next slot sits on its secondary
  // bus, which sysfs names under <bridge>/pci_bus/. The disk is the virtio
  // device's block child.
  std::string walk = "p=/sys/devices/pci0000:00; bus=0000:00; ";
  for (size_t i = 0; i < slots.size(); ++i) {
    walk += Cat("p=$p/$bus:", slots[i], ".0; [ -d $p ] || return 1; ");
    if (i + 1 < slots.size()) walk += "bus=$(ls $p/pci_bus 2>/dev/null | head -n1); [ -n \"$bus\" ] || return 1; ";
  }
  walk += "d=$(cat $p/virtio*/block/*/dev 2>/dev/null); [ -n \"$d\" ] || return 1; echo \"$d\"; ";
  return Cat("resolve() { ", walk, "}; i=0; while [ $i -lt ", timeout_ds,
             " ]; do resolve && exit 0; sleep 0.1; i=$((i+1)); done; echo \"no virtio-blk disk at PCI path ", pci_path,
             "\" >&2; exit 1");
}

Status SecureMountOutputToStatus(std::string_view output, int exit_code) {
  std::string_view out = TrimWhitespace(output);
  if (exit_code == 0 && out == "ok") return OkStatus();
  constexpr std::string_view kError = "error: ";
  if (out.substr(0, kError.size()) == kError) {
    std::string_view rest = out.substr(kError.size());
    auto sp = rest.find(' ');
    unsigned long long code = 0;
    if (ParseUint64(rest.substr(0, sp), &code) && code > 0 && code <= 16) {
      return Status(static_cast<absl::StatusCode>(code),
                    Cat("SecureMount: ", sp == std::string_view::npos ? "" : rest.substr(sp + 1)));
    }
  }
  return absl::InternalError(Cat("coco-kata-securemount exited ", exit_code, ": ", out));
}

}  // namespace cocostorage::e2e
