#include "state/state_store.h"

#include <dirent.h>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/json_fields.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::agent {
namespace {

const char* PhaseName(Phase p) {
  switch (p) {
    case Phase::kActivating:
      return "activating";
    case Phase::kActive:
      return "active";
    case Phase::kDeactivating:
      return "deactivating";
  }
  return "?";
}

}  // namespace

StateStore::StateStore(std::string dir) : dir_(std::move(dir)), records_(Cat(dir_, "/volumes")) {}

Status StateStore::Init() { return records_.Init(); }

Status StateStore::Save(const VolumeRecord& rec) {
  nlohmann::json j;
  j["version"] = 1;
  j["spec"] = rec.spec.ToJson();
  if (rec.request) j["request"] = rec.request->ToJson();
  j["phase"] = PhaseName(rec.phase);
  j["device_name"] = rec.device_name;
  j["device_path"] = rec.device_path;
  j["device_number"] = rec.device_number;
  j["device_size_bytes"] = rec.device_size_bytes;
  j["provisioning_bytes_written"] = rec.provisioning_bytes_written;
  j["provisioning_duration_ms"] = rec.provisioning_duration_ms;
  return records_.Write(rec.spec.id, j.dump(2));
}

StatusOr<VolumeRecord> VolumeRecordFromJson(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("spec")) {
    return absl::DataLossError("not valid JSON");
  }
  VolumeRecord rec;
  COCO_ASSIGN_OR_RETURN(rec.spec, VolumeSpec::FromJson(j["spec"]));
  if (j.contains("request")) {
    COCO_ASSIGN_OR_RETURN(VolumeSpec request, VolumeSpec::FromJson(j["request"]));
    if (request.id != rec.spec.id) return absl::DataLossError("request names another volume than spec");
    rec.request = std::move(request);
  }
  // Every member is optional; a present one of the wrong type is DATA_LOSS
  // (value() would throw for a string member, and cast a float to an
  // integer with undefined behaviour: found by fuzz/state_record).
  auto text_member = [&](const char* key, std::string* out) -> Status {
    if (!j.contains(key)) return OkStatus();
    if (!j[key].is_string()) return absl::DataLossError(Cat(key, " is not a string"));
    *out = j[key].get<std::string>();
    return OkStatus();
  };
  auto unsigned_member = [&](const char* key, uint64_t* out) -> Status {
    if (!j.contains(key)) return OkStatus();
    COCO_ASSIGN_OR_RETURN(*out, JsonUnsigned(j[key], key));
    return OkStatus();
  };
  std::string phase;
  COCO_RETURN_IF_ERROR(text_member("phase", &phase));
  if (phase == "active")
    rec.phase = Phase::kActive;
  else if (phase == "deactivating")
    rec.phase = Phase::kDeactivating;
  else
    rec.phase = Phase::kActivating;
  COCO_RETURN_IF_ERROR(text_member("device_name", &rec.device_name));
  COCO_RETURN_IF_ERROR(text_member("device_path", &rec.device_path));
  COCO_RETURN_IF_ERROR(text_member("device_number", &rec.device_number));
  COCO_RETURN_IF_ERROR(unsigned_member("device_size_bytes", &rec.device_size_bytes));
  COCO_RETURN_IF_ERROR(unsigned_member("provisioning_bytes_written", &rec.provisioning_bytes_written));
  COCO_RETURN_IF_ERROR(unsigned_member("provisioning_duration_ms", &rec.provisioning_duration_ms));
  return rec;
}

StatusOr<VolumeRecord> StateStore::Load(const std::string& id) {
  COCO_ASSIGN_OR_RETURN(std::optional<std::string> text, records_.Read(id));
  if (!text) return absl::NotFoundError(Cat("no state record for volume ", id));
  auto rec = VolumeRecordFromJson(*text);
  if (!rec.ok()) return Status(rec.status().code(), Cat("state record for ", id, ": ", rec.status().message()));
  return rec;
}

Status StateStore::Delete(const std::string& id) { return records_.Remove(id); }

StatusOr<std::vector<VolumeRecord>> StateStore::LoadAll() {
  std::vector<VolumeRecord> out;
  COCO_ASSIGN_OR_RETURN(std::vector<std::string> ids, records_.ListIds());
  for (const auto& id : ids) {
    auto rec = Load(id);
    if (!rec.ok()) {
      log::Error("state.record_unreadable", {{"volume", id}, {"error", std::string(rec.status().message())}});
      continue;
    }
    out.push_back(std::move(*rec));
  }
  return out;
}

}  // namespace cocostorage::agent
