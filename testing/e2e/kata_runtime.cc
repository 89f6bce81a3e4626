#include "kata_runtime.h"

#include <cctype>
#include <nlohmann/json.hpp>

#include "cocostorage/common/base64.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::e2e {
namespace {

constexpr char kBlk[] = "blk";
constexpr char kEncryptionKeyOpt[] = "encryption_key=";
constexpr char kCreateFsOpt[] = "create_filesystem";
constexpr char kFsGroupOpt[] = "fsGroup=";
constexpr char kCocoKeyPrefix[] = "cocostorage.dev/";

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }
bool IsHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 80)) out.push_back(std::isprint(static_cast<unsigned char>(c)) ? c : '?');
  if (s.size() > 80) out += "...";
  return out + "\"";
}

Status Invalid(std::string_view what) { return absl::InvalidArgumentError(std::string(what)); }

bool IsPolicyPciPath(std::string_view p) {
  auto two_hex = [&](size_t at) { return IsHex(p[at]) && IsHex(p[at + 1]); };
  if (p.size() == 2) return two_hex(0);
  if (p.size() == 5) return two_hex(0) && p[2] == '/' && two_hex(3);
  return false;
}

StatusOr<int64_t> ParseGid(std::string_view s) {
  unsigned long long v = 0;
  if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string_view::npos ||
      !ParseUint64(s, &v) || v > 0x7fffffffULL) {
    return Invalid(Cat("fsGroup ", Quote(s), " is not a decimal group id"));
  }
  return static_cast<int64_t>(v);
}

}  // namespace

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

}  // namespace cocostorage::e2e
