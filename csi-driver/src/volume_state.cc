#include "volume_state.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "cocostorage/common/fs_util.h"
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
  j["everPublished"] = r.ever_published;
  if (r.staged) {
    j["staged"] = {{"path", r.staged->path},
                   {"mode", VolumeModeName(r.staged->mode)},
                   {"accessMode", r.staged->access_mode}};
  }
  json targets = json::object();
  for (const auto& [path, p] : r.targets) {
    targets[path] = {{"mode", VolumeModeName(p.mode)}, {"accessMode", p.access_mode}, {"readonly", p.readonly},
                     {"fsGroup", p.fs_group},          {"mountFlags", p.mount_flags},
                     {"createFilesystem", p.create_filesystem}};
  }
  j["targets"] = targets;
  return j.dump(2) + "\n";
}

StatusOr<VolumeRecord> RecordFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError("volume record is not a JSON object");
  try {
    if (j.at("version").get<int>() != kFormatVersion) {
      return absl::DataLossError(Cat("volume record version ", j.at("version").dump(), " is not supported"));
    }
    VolumeRecord r;
    r.id = j.at("id").get<std::string>();
    r.name = j.at("name").get<std::string>();
    r.capacity_bytes = j.at("capacityBytes").get<int64_t>();
    auto params = ParseVolumeParams(j.at("params").get<std::map<std::string, std::string>>());
    if (!params.ok()) return absl::DataLossError(Cat("volume record params: ", params.status().message()));
    r.params = *params;
    COCO_ASSIGN_OR_RETURN(r.mode, ModeFromName(j.at("mode").get<std::string>()));
    r.backend = j.at("backend").get<std::string>();
    r.device = j.at("device").get<std::string>();
    r.inline_ephemeral = j.at("inlineEphemeral").get<bool>();
    r.ever_published = j.at("everPublished").get<bool>();
    if (j.contains("staged")) {
      const json& s = j["staged"];
      StageRecord st;
      st.path = s.at("path").get<std::string>();
      COCO_ASSIGN_OR_RETURN(st.mode, ModeFromName(s.at("mode").get<std::string>()));
      st.access_mode = s.at("accessMode").get<int>();
      r.staged = st;
    }
    for (const auto& [path, t] : j.at("targets").items()) {
      PublishRecord p;
      COCO_ASSIGN_OR_RETURN(p.mode, ModeFromName(t.at("mode").get<std::string>()));
      p.access_mode = t.at("accessMode").get<int>();
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

Status StateStore::Init() {
  COCO_RETURN_IF_ERROR(MakeDirs(dir_, 0700));
  // Temp files of writes interrupted by a crash ("<id>.json.tmp.<pid>").
  DIR* d = opendir(dir_.c_str());
  if (d == nullptr) return ErrnoStatus(errno, Cat("opening ", dir_));
  std::vector<std::string> stale;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.find(".json.tmp.") != std::string::npos) stale.push_back(n);
  }
  closedir(d);
  for (const auto& n : stale) COCO_RETURN_IF_ERROR(RemoveFileIfExists(dir_ + "/" + n));
  return OkStatus();
}

StatusOr<std::optional<VolumeRecord>> StateStore::Load(const std::string& id) const {
  auto text = ReadFileToString(PathFor(id), 1 << 20);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return std::optional<VolumeRecord>();
    return text.status();
  }
  auto r = RecordFromJson(*text);
  if (!r.ok()) return Annotate(r.status(), PathFor(id));
  if (r->id != id) return absl::DataLossError(Cat(PathFor(id), " holds volume \"", r->id, "\""));
  return std::optional<VolumeRecord>(std::move(*r));
}

Status StateStore::Save(const VolumeRecord& r) const { return AtomicWriteFile(PathFor(r.id), RecordToJson(r), 0600); }

Status StateStore::Remove(const std::string& id) const {
  COCO_RETURN_IF_ERROR(RemoveFileIfExists(PathFor(id)));
  SyncDir(dir_);
  return OkStatus();
}

StatusOr<std::vector<VolumeRecord>> StateStore::List() const {
  DIR* d = opendir(dir_.c_str());
  if (d == nullptr) return ErrnoStatus(errno, Cat("opening ", dir_));
  std::vector<std::string> ids;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    constexpr std::string_view kExt = ".json";
    if (n.size() > kExt.size() && n.compare(n.size() - kExt.size(), kExt.size(), kExt) == 0) {
      ids.push_back(n.substr(0, n.size() - kExt.size()));
    }
  }
  closedir(d);
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

void SyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

}  // namespace cocostorage::csi
