#include "core/volume_spec.h"

#include "cocostorage/common/json_fields.h"
#include "cocostorage/common/strings.h"
#include "core/text.h"

namespace cocostorage::agent {

Status ValidateVolumeId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("volume_id is required");
  auto rest = [](char c) { return IsAlnum(c) || c == '_' || c == '.' || c == '-'; };
  if (!IsAlnum(id.front()) || !CharsAre(id, 1, 64, rest)) {
    return absl::InvalidArgumentError(
        Cat("volume_id ", Quoted(id), " is not 1-64 characters of [A-Za-z0-9_.-] starting alphanumeric"));
  }
  return OkStatus();
}

std::string DeviceId::Describe() const {
  switch (kind) {
    case DeviceIdKind::kPciPath:
      return Cat("pci path ", value);
    case DeviceIdKind::kSerial:
      return Cat("serial ", value);
    case DeviceIdKind::kDevNumber:
      return Cat("device number ", value);
  }
  return value;
}

CipherSuite SuiteFor(IntegrityMode mode) {
  switch (mode) {
    case IntegrityMode::kNone:
      return {"aes", "xts-plain64", "", 64};
    case IntegrityMode::kHmacSha256:
      // 64 bytes for AES-256-XTS plus 32 for the HMAC key.
      return {"aes", "xts-plain64", "hmac(sha256)", 96};
    case IntegrityMode::kAegis128:
      return {"aegis128", "random", "aead", 16};
    case IntegrityMode::kAesGcm:
      return {"aes", "gcm-random", "aead", 32};
  }
  return {};
}

const char* IntegrityName(IntegrityMode m) {
  switch (m) {
    case IntegrityMode::kNone:
      return "none";
    case IntegrityMode::kHmacSha256:
      return "hmac-sha256";
    case IntegrityMode::kAegis128:
      return "aegis128";
    case IntegrityMode::kAesGcm:
      return "aes-gcm";
  }
  return "?";
}

StatusOr<IntegrityMode> ParseIntegrityName(const std::string& name) {
  for (auto m : {IntegrityMode::kNone, IntegrityMode::kHmacSha256, IntegrityMode::kAegis128, IntegrityMode::kAesGcm}) {
    if (name == IntegrityName(m)) return m;
  }
  return absl::InvalidArgumentError(Cat("unknown integrity mode \"", name, "\""));
}

bool VolumeSpec::SameVolumeAs(const VolumeSpec& o) const { return DiffAgainst(o).empty(); }

std::string VolumeSpec::DiffAgainst(const VolumeSpec& o) const {
  std::vector<std::string> diffs;
  if (device != o.device) diffs.push_back("device");
  if (key != o.key) diffs.push_back("key source");
  if (integrity != o.integrity) diffs.push_back("integrity");
  if (init_mode != o.init_mode) diffs.push_back("init mode");
  if (block_mode != o.block_mode) diffs.push_back("volume mode");
  if (fs_type != o.fs_type) diffs.push_back("fs type");
  if (mkfs_options != o.mkfs_options) diffs.push_back("mkfs options");
  if (mount_options != o.mount_options) diffs.push_back("mount options");
  if (fs_group != o.fs_group) diffs.push_back("fs group");
  if (target_path != o.target_path) diffs.push_back("target path");
  if (read_only != o.read_only) diffs.push_back("read-only");
  if (policy_rules != o.policy_rules) diffs.push_back("policy rules");
  if (teardown_on_unmount != o.teardown_on_unmount) diffs.push_back("teardown on unmount");
  if (create_if_blank != o.create_if_blank) diffs.push_back("create if blank");
  if (full_blank_check != o.full_blank_check) diffs.push_back("blank check");
  if (persistent_id != o.persistent_id) diffs.push_back("persistent volume");
  if (persistent_candidates != o.persistent_candidates) diffs.push_back("persistent candidates");
  return Join(diffs, ", ");
}

nlohmann::json VolumeSpec::ToJson() const {
  nlohmann::json j;
  j["id"] = id;
  j["device_kind"] = static_cast<int>(device.kind);
  j["device"] = device.value;
  j["key_source"] = key.ToString();
  j["integrity"] = IntegrityName(integrity);
  j["init_mode"] = init_mode == InitMode::kFullWipe ? "full-wipe" : "zero-guard";
  j["block_mode"] = block_mode;
  j["fs_type"] = fs_type;
  j["mkfs_options"] = mkfs_options;
  j["mount_options"] = mount_options;
  if (fs_group) j["fs_group"] = *fs_group;
  j["target_path"] = target_path;
  j["read_only"] = read_only;
  if (!policy_rules.empty()) j["policy_rules"] = policy_rules;
  if (teardown_on_unmount) j["teardown_on_unmount"] = true;
  if (!create_if_blank) j["create_if_blank"] = false;
  if (full_blank_check) j["full_blank_check"] = true;
  if (!persistent_id.empty()) j["persistent_id"] = persistent_id;
  if (!persistent_candidates.empty()) j["persistent_candidates"] = persistent_candidates;
  return j;
}

StatusOr<VolumeSpec> VolumeSpec::FromJson(const nlohmann::json& j) {
  try {
    VolumeSpec s;
    s.id = j.at("id").get<std::string>();
    COCO_ASSIGN_OR_RETURN(int64_t kind, JsonInteger(j.at("device_kind"), "device_kind", 0, 2));
    s.device = {static_cast<DeviceIdKind>(kind), j.at("device").get<std::string>()};
    auto key = KeySource::Parse(j.at("key_source").get<std::string>());
    if (!key.ok()) return absl::DataLossError(Cat("bad key source in state record: ", key.status().message()));
    s.key = *key;
    COCO_ASSIGN_OR_RETURN(s.integrity, ParseIntegrityName(j.at("integrity").get<std::string>()));
    s.init_mode = j.at("init_mode").get<std::string>() == "full-wipe" ? InitMode::kFullWipe : InitMode::kZeroGuard;
    s.block_mode = j.at("block_mode").get<bool>();
    s.fs_type = j.at("fs_type").get<std::string>();
    s.mkfs_options = j.at("mkfs_options").get<std::vector<std::string>>();
    s.mount_options = j.at("mount_options").get<std::vector<std::string>>();
    if (j.contains("fs_group")) {
      COCO_ASSIGN_OR_RETURN(int64_t group, JsonInteger(j.at("fs_group"), "fs_group"));
      s.fs_group = group;
    }
    s.target_path = j.at("target_path").get<std::string>();
    s.read_only = j.at("read_only").get<bool>();
    if (j.contains("policy_rules")) s.policy_rules = j.at("policy_rules").get<std::vector<std::string>>();
    if (j.contains("teardown_on_unmount")) s.teardown_on_unmount = j.at("teardown_on_unmount").get<bool>();
    if (j.contains("create_if_blank")) s.create_if_blank = j.at("create_if_blank").get<bool>();
    if (j.contains("full_blank_check")) s.full_blank_check = j.at("full_blank_check").get<bool>();
    if (j.contains("persistent_id")) {
      s.persistent_id = j.at("persistent_id").get<std::string>();
      if (Status v = ValidateVolumeId(s.persistent_id); !v.ok()) {
        return absl::DataLossError(Cat("bad persistent_id in state record: ", v.message()));
      }
    }
    if (j.contains("persistent_candidates")) {
      s.persistent_candidates = j.at("persistent_candidates").get<std::vector<std::string>>();
    }
    return s;
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(Cat("malformed volume record: ", e.what()));
  }
}

VolumeNames VolumeNames::For(const std::string& volume_id, const std::string& state_dir, bool guard) {
  VolumeNames n;
  // ':' cannot occur in a volume id, so these names are injective: no id can
  // produce another id's layer name (with '-', id "x-crypt" named x's crypt).
  std::string base = Cat(kDmPrefix, volume_id);
  n.crypt = Cat(base, ":crypt");
  n.pool = Cat(base, ":pool");
  n.top = guard ? base : n.crypt;
  n.header_file = Cat(state_dir, "/headers/", volume_id, ".luks2");
  n.guard_meta_file = Cat(state_dir, "/guard/", volume_id, ".tmeta");
  n.guard_meta_linear = Cat(base, ":gmeta");
  n.guard_data_linear = Cat(base, ":gdata");
  return n;
}

bool MappingBelongsTo(const std::string& volume_id, const std::string& dm_name) {
  const std::string base = Cat(kDmPrefix, volume_id);
  if (dm_name.size() < base.size() || dm_name.compare(0, base.size(), base) != 0) return false;
  return dm_name.size() == base.size() || dm_name[base.size()] == ':';
}

}  // namespace cocostorage::agent
