#include "kata/storage_mapping.h"

#include <cctype>
#include <cstdint>
#include <map>
#include <optional>
#include <string_view>

#include "cocostorage/common/strings.h"
#include "core/text.h"

namespace cocostorage::agent {
namespace {

constexpr char kBlk[] = "blk";
constexpr char kCreateFsOpt[] = "create_filesystem";
constexpr char kEncryptionKeyOpt[] = "encryption_key";
constexpr char kKindOpt[] = "cocostorage.dev/kind";
constexpr char kKbsUriOpt[] = "cocostorage.dev/kbsResourceUri";

// Every cocostorage.dev/ key the CSI plugin writes (csi-driver/src/mount_info.h);
// any other is refused, not ignored.
constexpr std::string_view kCocoKeys[] = {kKindOpt,
                                          kKbsUriOpt,
                                          "cocostorage.dev/integrity",
                                          "cocostorage.dev/volumeMode",
                                          "cocostorage.dev/volumeId",
                                          "cocostorage.dev/mkfsOptions"};

bool IsKnownCocoKey(std::string_view key) {
  for (std::string_view k : kCocoKeys) {
    if (k == key) return true;
  }
  return false;
}

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

Status Invalid(std::string_view what) { return absl::InvalidArgumentError(std::string(what)); }

// Driver options are "key=value" or a bare "key"; returns value or nullopt.
struct DriverOptions {
  std::map<std::string, std::string> values;
  std::map<std::string, bool> flags;
};

StatusOr<DriverOptions> SplitDriverOptions(const std::vector<std::string>& opts) {
  DriverOptions out;
  for (const auto& o : opts) {
    if (o.empty()) return Invalid("empty driver option");
    size_t eq = o.find('=');
    std::string key = eq == std::string::npos ? o : o.substr(0, eq);
    if (key.empty()) return Invalid(Cat("driver option ", Quoted(o), " has no key"));
    if (out.values.count(key) || out.flags.count(key))
      return Invalid(Cat("driver option ", Quoted(key), " given twice"));
    if (eq == std::string::npos) {
      out.flags[key] = true;
    } else {
      out.values[key] = o.substr(eq + 1);
    }
  }
  return out;
}

StatusOr<int64_t> ParseGid(std::string_view s) {
  unsigned long long v = 0;
  if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string_view::npos ||
      !ParseUint64(s, &v) || v > 0x7fffffffULL) {
    return Invalid(Cat("fsGroup ", Quoted(s), " is not a decimal group id"));
  }
  return static_cast<int64_t>(v);
}

// The value of driver option `key`, or nullptr.
const std::string* Find(const DriverOptions& opts, const std::string& key) {
  auto it = opts.values.find(key);
  return it == opts.values.end() ? nullptr : &it->second;
}

// The key source from encryption_key and the kind / kbsResourceUri hints
// (rules in storage_mapping.h).
StatusOr<KeySource> ParseKey(const DriverOptions& opts) {
  auto value = [&](const std::string& key) { return Find(opts, key); };
  const std::string* key = value(kEncryptionKeyOpt);
  if (key == nullptr || key->empty()) return Invalid("driver option encryption_key is required (no plaintext volumes)");
  const std::string* kind = value(kKindOpt);
  if (kind != nullptr && *kind != "persistent" && *kind != "ephemeral") {
    return Invalid(Cat(kKindOpt, " ", Quoted(*kind), " is not \"persistent\" or \"ephemeral\""));
  }
  const bool persistent = kind != nullptr && *kind == "persistent";
  const std::string* hint = value(kKbsUriOpt);
  if (persistent && hint == nullptr) {
    return Invalid(Cat(kKindOpt, "=persistent requires the driver option ", kKbsUriOpt));
  }
  if (!persistent && hint != nullptr) {
    return Invalid(Cat(kKbsUriOpt, " is given for a volume that is not ", kKindOpt, "=persistent"));
  }
  std::optional<KeySource> from_hint;
  if (hint != nullptr) {
    auto kbs = KeySource::Kbs(*hint);
    if (!kbs.ok()) return Invalid(Cat(kKbsUriOpt, ": ", kbs.status().message()));
    from_hint = *kbs;
  }

  if (*key == "ephemeral") {
    // A persistent volume presents itself like an ephemeral one, the only
    // pair kata-agent hands to the CDH slot: the hint names its key.
    return persistent ? *from_hint : KeySource::Ephemeral();
  }
  if (!StartsWith(*key, "kbs:///")) {
    return Invalid(Cat("encryption_key ", Quoted(*key), " is neither \"ephemeral\" nor a kbs:/// resource URI"));
  }
  // The older spelling, encryption_key=<KBS URI>.
  auto kbs = KeySource::Kbs(*key);
  if (!kbs.ok()) return Invalid(Cat("encryption_key: ", kbs.status().message()));
  if (kind != nullptr && !persistent) {
    return Invalid(Cat("encryption_key names a KBS resource but ", kKindOpt, " is \"ephemeral\""));
  }
  if (from_hint && *from_hint != *kbs) {
    return Invalid(Cat("encryption_key ", Quoted(*key), " and ", kKbsUriOpt, " ", Quoted(*hint), " disagree"));
  }
  return *kbs;
}

StatusOr<IntegrityMode> ParseIntegrity(std::string_view s) {
  if (s.empty()) return IntegrityMode::kHmacSha256;
  auto m = ParseIntegrityName(std::string(s));
  if (!m.ok()) {
    return Invalid(Cat("cocostorage.dev/integrity ", Quoted(s), " is not hmac-sha256, none, aegis128 or aes-gcm"));
  }
  return *m;
}

}  // namespace

std::string SanitizeVolumeId(std::string_view id) {
  std::string out;
  for (char c : id) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
    out.push_back(ok && static_cast<unsigned char>(c) < 128 ? c : '-');
  }
  if (out.empty() || !std::isalnum(static_cast<unsigned char>(out[0]))) out.insert(0, "v");
  if (out.size() > 64) {
    uint64_t h = 1469598103934665603ULL;  // FNV-1a over the original id
    for (char c : id) {
      h ^= static_cast<unsigned char>(c);
      h *= 1099511628211ULL;
    }
    out = Cat(out.substr(0, 47), "-", fmt::format("{:016x}", h));
  }
  return out;
}

StatusOr<ActivationRequest> ActivationFromKataStorage(const KataStorage& storage,
                                                      std::chrono::milliseconds device_timeout) {
  if (storage.driver != kBlk) return Invalid(Cat("storage driver ", Quoted(storage.driver), " is not \"blk\""));
  if (storage.driver_options.size() > 64) return Invalid("more than 64 driver options");
  COCO_ASSIGN_OR_RETURN(DriverOptions opts, SplitDriverOptions(storage.driver_options));
  auto value = [&](const std::string& key) { return Find(opts, key); };
  for (const auto& [flag, unused] : opts.flags) {
    if (flag != kCreateFsOpt) return Invalid(Cat("unknown driver option ", Quoted(flag)));
  }
  for (const auto& [key, unused] : opts.values) {
    if (key == kEncryptionKeyOpt || key == "fsGroup" || IsKnownCocoKey(key)) continue;
    return Invalid(Cat("unknown driver option ", Quoted(key)));
  }

  ActivationRequest r;
  r.origin = Origin::kKataStorage;
  r.device = DeviceId{DeviceIdKind::kPciPath, storage.source};
  r.target_path = storage.mount_point;
  r.device_timeout_ms = static_cast<uint32_t>(device_timeout.count());
  r.init_mode = InitMode::kZeroGuard;

  // Key: the guest never formats a volume without encryption.
  COCO_ASSIGN_OR_RETURN(KeySource key, ParseKey(opts));
  const bool ephemeral = key.ephemeral();
  r.key = std::move(key);

  const std::string* mode = value("cocostorage.dev/volumeMode");
  const bool block = mode != nullptr && *mode == "block";
  if (mode != nullptr && !block && *mode != "filesystem") {
    return Invalid(Cat("cocostorage.dev/volumeMode ", Quoted(*mode), " is not \"filesystem\" or \"block\""));
  }
  r.block_mode = block;

  const std::string* integrity = value("cocostorage.dev/integrity");
  COCO_ASSIGN_OR_RETURN(r.integrity, ParseIntegrity(integrity ? *integrity : ""));

  // Options: "ro" is the read-only flag; the rest are mount options (the
  // admission layer checks them against its allowlist).
  std::vector<std::string> mount_options;
  for (const auto& o : storage.options) {
    if (o == "ro") {
      r.read_only = true;
    } else if (o != "rw") {
      mount_options.push_back(o);
    }
  }

  const bool create_fs = opts.flags.count(kCreateFsOpt) != 0;
  if (block) {
    if (create_fs) return Invalid("create_filesystem makes no sense for a block volume");
    if (!mount_options.empty()) {
      return Invalid(Cat("block volumes take no mount options, got ", Quoted(Join(mount_options, ","))));
    }
    if (value("cocostorage.dev/mkfsOptions")) return Invalid("block volumes take no cocostorage.dev/mkfsOptions");
  } else {
    if (storage.fs_type.empty()) return Invalid("fstype is required for a filesystem volume");
    // A fresh ephemeral key always means a fresh file system; a plugin that
    // says otherwise is confused (or hostile) and we refuse rather than guess.
    if (ephemeral && !create_fs) {
      return Invalid(
          "an ephemeral-key filesystem volume requires create_filesystem (a new key means a new file system)");
    }
    r.fs_type = storage.fs_type;
    r.mount_options = std::move(mount_options);
    if (const std::string* mkfs = value("cocostorage.dev/mkfsOptions")) r.mkfs_options = Split(*mkfs, ' ');
  }
  if (const std::string* gid = value("fsGroup")) {
    COCO_ASSIGN_OR_RETURN(r.fs_group, ParseGid(*gid));
  }

  // Volume id: the CSI volume id when given (names the mappings and the
  // agent's record), else one derived from the PCI path.
  const std::string* vid = value("cocostorage.dev/volumeId");
  if (vid != nullptr && !vid->empty()) {
    r.volume_id = SanitizeVolumeId(*vid);
  } else {
    std::string from_source = storage.source.substr(0, 16);
    for (char& c : from_source) c = c == '/' ? '-' : c;
    r.volume_id = SanitizeVolumeId(Cat("kata-", from_source));
  }
  return r;
}

}  // namespace cocostorage::agent
