#include "state/state_store.h"

#include <dirent.h>

#include "cocostorage/common/fs_util.h"
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
  j["phase"] = PhaseName(rec.phase);
  j["device_name"] = rec.device_name;
  j["device_path"] = rec.device_path;
  j["device_number"] = rec.device_number;
  j["device_size_bytes"] = rec.device_size_bytes;
  j["provisioning_bytes_written"] = rec.provisioning_bytes_written;
  j["provisioning_duration_ms"] = rec.provisioning_duration_ms;
  return records_.Write(rec.spec.id, j.dump(2));
}

StatusOr<VolumeRecord> StateStore::Load(const std::string& id) {
  COCO_ASSIGN_OR_RETURN(std::optional<std::string> text, records_.Read(id));
  if (!text) return absl::NotFoundError(Cat("no state record for volume ", id));
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("spec")) {
    return absl::DataLossError(Cat("state record for ", id, " is not valid JSON"));
  }
  VolumeRecord rec;
  COCO_ASSIGN_OR_RETURN(rec.spec, VolumeSpec::FromJson(j["spec"]));
  std::string phase = j.value("phase", "");
  if (phase == "active")
    rec.phase = Phase::kActive;
  else if (phase == "deactivating")
    rec.phase = Phase::kDeactivating;
  else
    rec.phase = Phase::kActivating;
  rec.device_name = j.value("device_name", "");
  rec.device_path = j.value("device_path", "");
  rec.device_number = j.value("device_number", "");
  rec.device_size_bytes = j.value("device_size_bytes", uint64_t{0});
  rec.provisioning_bytes_written = j.value("provisioning_bytes_written", uint64_t{0});
  rec.provisioning_duration_ms = j.value("provisioning_duration_ms", uint64_t{0});
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
