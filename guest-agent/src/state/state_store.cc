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

StateStore::StateStore(std::string dir) : dir_(std::move(dir)) {}

Status StateStore::Init() { return MakeDirs(Cat(dir_, "/volumes"), 0700); }

std::string StateStore::PathFor(const std::string& id) const { return Cat(dir_, "/volumes/", id, ".json"); }

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
  return AtomicWriteFile(PathFor(rec.spec.id), j.dump(2), 0600);
}

StatusOr<VolumeRecord> StateStore::Load(const std::string& id) {
  auto text = ReadFileToString(PathFor(id));
  if (!text.ok()) return text.status();
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

Status StateStore::Delete(const std::string& id) { return RemoveFileIfExists(PathFor(id)); }

StatusOr<std::vector<VolumeRecord>> StateStore::LoadAll() {
  std::vector<VolumeRecord> out;
  std::string vdir = Cat(dir_, "/volumes");
  DIR* d = opendir(vdir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, Cat("opening ", vdir));
  std::vector<std::string> ids;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 5 && n.substr(n.size() - 5) == ".json") ids.push_back(n.substr(0, n.size() - 5));
  }
  closedir(d);
  std::sort(ids.begin(), ids.end());
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
