#include "kata_mapping.h"

#include <cctype>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "cocostorage/common/strings.h"

namespace cocostorage::e2e {
namespace {

namespace pb = cocostorage::storage::v1;

constexpr char kBlk[] = "blk";
constexpr char kEncryptionKeyOpt[] = "encryption_key=";
constexpr char kCreateFsOpt[] = "create_filesystem";
constexpr char kFsGroupOpt[] = "fsGroup=";

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool IsHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 80)) out.push_back(std::isprint(static_cast<unsigned char>(c)) ? c : '?');
  if (s.size() > 80) out += "...";
  return out + "\"";
}

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
    if (key.empty()) return Invalid(Cat("driver option ", Quote(o), " has no key"));
    if (out.values.count(key) || out.flags.count(key))
      return Invalid(Cat("driver option ", Quote(key), " given twice"));
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
    return Invalid(Cat("fsGroup ", Quote(s), " is not a decimal group id"));
  }
  return static_cast<int64_t>(v);
}

StatusOr<pb::Integrity> ParseIntegrity(std::string_view s) {
  if (s.empty() || s == "hmac-sha256") return pb::INTEGRITY_HMAC_SHA256;
  if (s == "none") return pb::INTEGRITY_NONE;
  if (s == "aegis128") return pb::INTEGRITY_AEGIS128;
  if (s == "aes-gcm") return pb::INTEGRITY_AES_GCM;
  return Invalid(Cat("cocostorage.dev/integrity ", Quote(s), " is not hmac-sha256, none, aegis128 or aes-gcm"));
}

}  // namespace

std::string Base64UrlEncode(std::string_view data) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(data[k])); };
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    for (int shift : {18, 12, 6, 0}) out.push_back(kAlphabet[(v >> shift) & 63]);
  }
  size_t rest = data.size() - i;
  if (rest == 1) {
    uint32_t v = byte(i) << 16;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out += "==";
  } else if (rest == 2) {
    uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out += "=";
  }
  return out;
}

std::string DirectVolumeDirName(std::string_view volume_path) { return Base64UrlEncode(volume_path); }

StatusOr<KataMountInfo> ParseMountInfo(std::string_view json) {
  auto j = nlohmann::json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid("mountInfo.json is not valid JSON");
  if (!j.is_object()) return Invalid("mountInfo.json is not a JSON object");
  KataMountInfo m;
  auto str = [&](const char* key, std::string* out) -> Status {
    auto it = j.find(key);
    if (it == j.end()) return Invalid(Cat("mountInfo.json: \"", key, "\" is missing"));
    if (!it->is_string()) return Invalid(Cat("mountInfo.json: \"", key, "\" is not a string"));
    *out = it->get<std::string>();
    return OkStatus();
  };
  COCO_RETURN_IF_ERROR(str("volume-type", &m.volume_type));
  COCO_RETURN_IF_ERROR(str("device", &m.device));
  COCO_RETURN_IF_ERROR(str("fstype", &m.fs_type));
  if (m.volume_type.empty()) return Invalid("mountInfo.json: \"volume-type\" is empty");
  if (m.device.empty()) return Invalid("mountInfo.json: \"device\" is empty");
  auto md = j.find("metadata");
  if (md == j.end()) return Invalid("mountInfo.json: \"metadata\" is missing");
  if (!md->is_object()) return Invalid("mountInfo.json: \"metadata\" is not an object");
  for (auto it = md->begin(); it != md->end(); ++it) {
    if (!it.value().is_string()) {
      return Invalid(Cat("mountInfo.json: metadata ", Quote(it.key()), " is not a string"));
    }
    m.metadata[it.key()] = it.value().get<std::string>();
  }
  auto opts = j.find("options");
  if (opts == j.end()) return Invalid("mountInfo.json: \"options\" is missing");
  if (!opts->is_array()) return Invalid("mountInfo.json: \"options\" is not an array");
  for (const auto& o : *opts) {
    if (!o.is_string()) return Invalid("mountInfo.json: an element of \"options\" is not a string");
    m.options.push_back(o.get<std::string>());
  }
  return m;
}

bool IsPolicyPciPath(std::string_view p) {
  auto two_hex = [&](size_t at) { return IsHex(p[at]) && IsHex(p[at + 1]); };
  if (p.size() == 2) return two_hex(0);
  if (p.size() == 5) return two_hex(0) && p[2] == '/' && two_hex(3);
  return false;
}

StatusOr<KataStorage> BuildKataStorage(const KataMountInfo& info, const std::string& guest_pci_path) {
  if (info.volume_type != kBlk) {
    return Invalid(Cat("volume-type ", Quote(info.volume_type), " is not supported (only \"blk\")"));
  }
  if (!IsPolicyPciPath(guest_pci_path)) {
    return Invalid(Cat("guest PCI path ", Quote(guest_pci_path), " is not of the form \"02\" or \"02/00\""));
  }
  KataStorage s;
  s.driver = kBlk;
  s.source = guest_pci_path;
  s.fs_type = info.fs_type;
  s.options = info.options;
  s.mount_point = Cat(kKataSandboxStorageDir, "/", Base64UrlEncode(guest_pci_path));
  // The runtime's order: encryption key, create_filesystem, fsGroup; then our
  // own keys, sorted (metadata is a map), passed through untouched.
  const auto& md = info.metadata;
  if (auto it = md.find("encryptionKey"); it != md.end() && !it->second.empty()) {
    s.driver_options.push_back(Cat(kEncryptionKeyOpt, it->second));
  }
  if (auto it = md.find("createFilesystem"); it != md.end()) {
    if (it->second == "true") {
      s.driver_options.push_back(kCreateFsOpt);
    } else if (it->second != "false" && !it->second.empty()) {
      return Invalid(Cat("metadata createFilesystem ", Quote(it->second), " is not \"true\" or \"false\""));
    }
  }
  if (auto it = md.find("fsGroup"); it != md.end() && !it->second.empty()) {
    COCO_RETURN_IF_ERROR(ParseGid(it->second).status());
    s.driver_options.push_back(Cat(kFsGroupOpt, it->second));
  }
  for (const auto& [k, v] : md) {
    if (!StartsWith(k, kCocoKeyPrefix)) continue;  // fsGroupChangePolicy and foreign keys: not ours
    if (k.size() == sizeof(kCocoKeyPrefix) - 1) return Invalid("metadata key \"cocostorage.dev/\" has no name");
    if (k.find('=') != std::string::npos) return Invalid(Cat("metadata key ", Quote(k), " contains '='"));
    s.driver_options.push_back(Cat(k, "=", v));
  }
  return s;
}

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

StatusOr<pb::ActivateVolumeRequest> ToActivateRequest(const KataStorage& storage,
                                                      std::chrono::milliseconds device_timeout) {
  if (storage.driver != kBlk) return Invalid(Cat("storage driver ", Quote(storage.driver), " is not \"blk\""));
  if (!IsPolicyPciPath(storage.source)) {
    return absl::PermissionDeniedError(Cat("storage source ", Quote(storage.source),
                                           " is not a PCI path the policy allows (^[0-9a-f]{2}(/[0-9a-f]{2})?$)"));
  }
  const std::string expected_mount = Cat(kKataSandboxStorageDir, "/", Base64UrlEncode(storage.source));
  if (storage.mount_point != expected_mount) {
    return absl::PermissionDeniedError(
        Cat("storage mount_point ", Quote(storage.mount_point), " is not ", expected_mount, " (policy)"));
  }
  COCO_ASSIGN_OR_RETURN(DriverOptions opts, SplitDriverOptions(storage.driver_options));
  auto value = [&](const std::string& key) -> const std::string* {
    auto it = opts.values.find(key);
    return it == opts.values.end() ? nullptr : &it->second;
  };
  for (const auto& [flag, unused] : opts.flags) {
    if (flag != kCreateFsOpt) return Invalid(Cat("unknown driver option ", Quote(flag)));
  }
  for (const auto& [key, unused] : opts.values) {
    if (key == "encryption_key" || key == "fsGroup" || StartsWith(key, kCocoKeyPrefix)) continue;
    return Invalid(Cat("unknown driver option ", Quote(key)));
  }

  pb::ActivateVolumeRequest r;
  r.mutable_device()->set_pci_path(storage.source);
  r.set_target_path(storage.mount_point);
  r.set_device_timeout_ms(static_cast<uint32_t>(device_timeout.count()));
  r.set_init_mode(pb::INIT_MODE_ZERO_GUARD);

  // Key: the guest never formats a volume without encryption.
  const std::string* key = value("encryption_key");
  if (key == nullptr || key->empty()) return Invalid("driver option encryption_key is required (no plaintext volumes)");
  const bool ephemeral = *key == "ephemeral";
  if (ephemeral) {
    r.mutable_key()->mutable_ephemeral();
  } else if (StartsWith(*key, "kbs:///") && key->size() > 7) {
    r.mutable_key()->set_kbs_resource_uri(*key);
  } else {
    return Invalid(Cat("encryption_key ", Quote(*key), " is neither \"ephemeral\" nor a kbs:/// resource URI"));
  }

  // Mode.
  const std::string* mode = value("cocostorage.dev/volumeMode");
  const bool block = mode != nullptr && *mode == "block";
  if (mode != nullptr && !block && *mode != "filesystem") {
    return Invalid(Cat("cocostorage.dev/volumeMode ", Quote(*mode), " is not \"filesystem\" or \"block\""));
  }
  r.set_mode(block ? pb::VOLUME_MODE_BLOCK : pb::VOLUME_MODE_FILESYSTEM);

  const std::string* integrity = value("cocostorage.dev/integrity");
  COCO_ASSIGN_OR_RETURN(pb::Integrity integ, ParseIntegrity(integrity ? *integrity : ""));
  r.set_integrity(integ);

  // Options: "ro" is the read-only flag; the rest are mount options (the agent
  // validates them against its allowlist).
  std::vector<std::string> mount_options;
  for (const auto& o : storage.options) {
    if (o == "ro") {
      r.set_read_only(true);
    } else if (o == "rw") {
      continue;
    } else {
      mount_options.push_back(o);
    }
  }

  const bool create_fs = opts.flags.count(kCreateFsOpt) != 0;
  if (block) {
    if (create_fs) return Invalid("create_filesystem makes no sense for a block volume");
    if (!mount_options.empty())
      return Invalid(Cat("block volumes take no mount options, got ", Quote(Join(mount_options, ","))));
    if (value("cocostorage.dev/mkfsOptions")) return Invalid("block volumes take no cocostorage.dev/mkfsOptions");
  } else {
    if (storage.fs_type.empty()) return Invalid("fstype is required for a filesystem volume");
    // A fresh ephemeral key always means a fresh file system; a plugin that
    // says otherwise is confused (or hostile) and we refuse rather than guess.
    if (ephemeral && !create_fs) {
      return Invalid(
          "an ephemeral-key filesystem volume requires create_filesystem (a new key means a new file system)");
    }
    auto* fs = r.mutable_filesystem();
    fs->set_fs_type(storage.fs_type);
    for (const auto& o : mount_options) fs->add_mount_options(o);
    if (const std::string* mkfs = value("cocostorage.dev/mkfsOptions")) {
      for (auto& word : Split(*mkfs, ' ')) fs->add_mkfs_options(word);
    }
  }
  if (const std::string* gid = value("fsGroup")) {
    COCO_ASSIGN_OR_RETURN(int64_t g, ParseGid(*gid));
    r.mutable_filesystem()->set_fs_group(g);
  }

  // Volume id: the CSI volume id when given (names the mappings and the
  // agent's record), else one derived from the PCI path.
  const std::string* vid = value("cocostorage.dev/volumeId");
  if (vid != nullptr && !vid->empty()) {
    r.set_volume_id(SanitizeVolumeId(*vid));
  } else {
    std::string from_source = storage.source;
    for (char& c : from_source) c = c == '/' ? '-' : c;
    r.set_volume_id(Cat("kata-", from_source));
  }
  return r;
}

}  // namespace cocostorage::e2e
