#include "volume_state.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/json_fields.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::csi {
namespace {

using nlohmann::json;
constexpr int kFormatVersion = 1;

StatusOr<VolumeMode> ModeFromName(const std::string& s) {
  if (s == "filesystem") return VolumeMode::kFilesystem;
  if (s == "block") return VolumeMode::kBlock;
  return absl::DataLossError(Cat("unknown volume mode \"", s, "\""));
}

}  // namespace

const char* VolumeModeName(VolumeMode m) { return m == VolumeMode::kBlock ? "block" : "filesystem"; }

std::string RecordToJson(const VolumeRecord& r) {
  json j;
  j["version"] = kFormatVersion;
  j["id"] = r.id;
  j["name"] = r.name;
  j["capacityBytes"] = r.capacity_bytes;
  j["params"] = r.params.ToMap();
  j["mode"] = VolumeModeName(r.mode);
  j["backend"] = r.backend;
  j["device"] = r.device;
  j["inlineEphemeral"] = r.inline_ephemeral;
  if (r.attached_only) j["attachedOnly"] = true;
  // No longer read (createFilesystem no longer depends on it), still written:
  // plugin versions before persistent volumes require the key. true is the
  // value that never makes such a version ask the guest for a new file system
  // on a KBS volume.
  j["everPublished"] = true;
  if (r.staged) {
    j["staged"] = {
        {"path", r.staged->path}, {"mode", VolumeModeName(r.staged->mode)}, {"accessMode", r.staged->access_mode}};
    if (!r.staged->device.empty()) j["staged"]["device"] = r.staged->device;
  }
  json targets = json::object();
  for (const auto& [path, p] : r.targets) {
    targets[path] = {{"mode", VolumeModeName(p.mode)}, {"accessMode", p.access_mode},
                     {"readonly", p.readonly},         {"fsGroup", p.fs_group},
                     {"mountFlags", p.mount_flags},    {"createFilesystem", p.create_filesystem}};
  }
  j["targets"] = targets;
  return j.dump(2) + "\n";
}

StatusOr<VolumeRecord> RecordFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError("volume record is not a JSON object");
  try {
    // Integers through JsonInteger: get<int>() of a JSON float is undefined
    // behaviour when out of range (found by fuzz/csi_records).
    auto version = JsonInteger(j.at("version"), "version");
    if (!version.ok() || *version != kFormatVersion) {
      return absl::DataLossError(Cat("volume record version ", j.at("version").dump(), " is not supported"));
    }
    VolumeRecord r;
    r.id = j.at("id").get<std::string>();
    r.name = j.at("name").get<std::string>();
    COCO_ASSIGN_OR_RETURN(r.capacity_bytes, JsonInteger(j.at("capacityBytes"), "capacityBytes"));
    auto params = ParseVolumeParams(j.at("params").get<std::map<std::string, std::string>>());
    if (!params.ok()) return absl::DataLossError(Cat("volume record params: ", params.status().message()));
    if (params->HasUriTemplate()) {
      // CreateVolume records only resolved URIs: this record was not ours.
      return absl::DataLossError("volume record params: kbsResourceUri is an unresolved template");
    }
    r.params = *params;
    COCO_ASSIGN_OR_RETURN(r.mode, ModeFromName(j.at("mode").get<std::string>()));
    r.backend = j.at("backend").get<std::string>();
    r.device = j.at("device").get<std::string>();
    r.inline_ephemeral = j.at("inlineEphemeral").get<bool>();
    if (j.contains("attachedOnly")) r.attached_only = j.at("attachedOnly").get<bool>();
    // Legacy key (see RecordToJson): optional, but a boolean when present.
    if (j.contains("everPublished")) (void)j.at("everPublished").get<bool>();
    if (j.contains("staged")) {
      const json& s = j["staged"];
      StageRecord st;
      st.path = s.at("path").get<std::string>();
      COCO_ASSIGN_OR_RETURN(st.mode, ModeFromName(s.at("mode").get<std::string>()));
      COCO_ASSIGN_OR_RETURN(int64_t access, JsonInteger(s.at("accessMode"), "staged.accessMode", INT32_MIN, INT32_MAX));
      st.access_mode = static_cast<int>(access);
      if (s.contains("device")) st.device = s.at("device").get<std::string>();
      r.staged = st;
    }
    for (const auto& [path, t] : j.at("targets").items()) {
      PublishRecord p;
      COCO_ASSIGN_OR_RETURN(p.mode, ModeFromName(t.at("mode").get<std::string>()));
      COCO_ASSIGN_OR_RETURN(int64_t access, JsonInteger(t.at("accessMode"), "accessMode", INT32_MIN, INT32_MAX));
      p.access_mode = static_cast<int>(access);
      p.readonly = t.at("readonly").get<bool>();
      p.fs_group = t.at("fsGroup").get<std::string>();
      p.mount_flags = t.at("mountFlags").get<std::vector<std::string>>();
      p.create_filesystem = t.at("createFilesystem").get<bool>();
      r.targets[path] = p;
    }
    return r;
  } catch (const json::exception& e) {
    return absl::DataLossError(Cat("volume record: ", e.what()));
  }
}

Status StateStore::Init() { return records_.Init(); }

StatusOr<std::optional<VolumeRecord>> StateStore::Load(const std::string& id) const {
  COCO_ASSIGN_OR_RETURN(std::optional<std::string> text, records_.Read(id));
  if (!text) return std::optional<VolumeRecord>();
  auto r = RecordFromJson(*text);
  if (!r.ok()) return Annotate(r.status(), records_.PathFor(id));
  if (r->id != id) return absl::DataLossError(Cat(records_.PathFor(id), " holds volume \"", r->id, "\""));
  return std::optional<VolumeRecord>(std::move(*r));
}

Status StateStore::Save(const VolumeRecord& r) const { return records_.Write(r.id, RecordToJson(r)); }

Status StateStore::Remove(const std::string& id) const { return records_.Remove(id); }

StatusOr<std::vector<VolumeRecord>> StateStore::List() const {
  COCO_ASSIGN_OR_RETURN(std::vector<std::string> ids, records_.ListIds());
  std::vector<VolumeRecord> out;
  for (const auto& id : ids) {
    auto r = Load(id);
    if (!r.ok()) {
      log::Error("state.record_unreadable", {{"volume", id}, {"error", std::string(r.status().message())}});
      continue;
    }
    if (r->has_value()) out.push_back(std::move(**r));
  }
  return out;
}

}  // namespace cocostorage::csi
