#include "csi_util.h"

#include "cocostorage/common/grpc_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "params.h"

namespace cocostorage::csi {

StatusOr<Capability> ParseCapability(const pb::VolumeCapability& cap) {
  Capability c;
  using Mode = pb::VolumeCapability::AccessMode;
  const int mode = cap.access_mode().mode();
  if (mode == Mode::UNKNOWN) return absl::InvalidArgumentError("volume capability: access_mode is required");
  if (!Mode::Mode_IsValid(mode)) {
    return absl::InvalidArgumentError(Cat("volume capability: access mode ", mode, " is not a known mode"));
  }
  c.access_mode = mode;
  switch (cap.access_type_case()) {
    case pb::VolumeCapability::kBlock:
      c.mode = VolumeMode::kBlock;
      break;
    case pb::VolumeCapability::kMount: {
      c.mode = VolumeMode::kFilesystem;
      const auto& m = cap.mount();
      if (!m.fs_type().empty()) {
        COCO_RETURN_IF_ERROR(ValidateFsType(m.fs_type()));
        c.fs_type = m.fs_type();
      }
      for (const auto& f : m.mount_flags()) {
        COCO_RETURN_IF_ERROR(ValidateMountFlag(f));
        c.mount_flags.push_back(f);
      }
      if (!m.volume_mount_group().empty()) {
        COCO_RETURN_IF_ERROR(ValidateFsGroup(m.volume_mount_group()));
        c.mount_group = m.volume_mount_group();
      }
      break;
    }
    default:
      return absl::InvalidArgumentError("volume capability: access_type (block or mount) is required");
  }
  return c;
}

bool IsSingleNodeMode(int access_mode) {
  using Mode = pb::VolumeCapability::AccessMode;
  return access_mode == Mode::SINGLE_NODE_WRITER || access_mode == Mode::SINGLE_NODE_READER_ONLY ||
         access_mode == Mode::SINGLE_NODE_SINGLE_WRITER || access_mode == Mode::SINGLE_NODE_MULTI_WRITER;
}

Status RequireSingleNode(const Capability& cap, absl::StatusCode code) {
  if (IsSingleNodeMode(cap.access_mode)) return OkStatus();
  return Status(code, Cat("access mode ",
                          pb::VolumeCapability::AccessMode::Mode_Name(
                              static_cast<pb::VolumeCapability::AccessMode::Mode>(cap.access_mode)),
                          " is not supported: a direct-assigned volume belongs to one VM on one node"));
}

Status CheckCapabilityFits(const VolumeRecord& volume, const Capability& cap, absl::StatusCode code) {
  COCO_RETURN_IF_ERROR(RequireSingleNode(cap, code));
  if (cap.mode != volume.mode) {
    return Status(code, Cat("volume ", volume.id, " was created for ", VolumeModeName(volume.mode), " access, not ",
                            VolumeModeName(cap.mode)));
  }
  const std::string& fs = volume.params.fs_type.empty() ? std::string("ext4") : volume.params.fs_type;
  if (cap.mode == VolumeMode::kFilesystem && !cap.fs_type.empty() && cap.fs_type != fs) {
    return Status(code, Cat("volume ", volume.id, " uses fsType ", fs, ", not ", cap.fs_type));
  }
  return OkStatus();
}

std::map<std::string, std::string> ToStdMap(const google::protobuf::Map<std::string, std::string>& m) {
  return std::map<std::string, std::string>(m.begin(), m.end());
}

grpc::Status Reply(std::string_view method, std::string_view volume_id, const Status& s) {
  // The id comes from the request: log at most kEchoMax bytes of it.
  const std::string volume = Echo(volume_id);
  if (s.ok()) {
    log::Info("rpc", {{"method", std::string(method)}, {"volume", volume}, {"code", "OK"}});
  } else {
    log::Warn("rpc", {{"method", std::string(method)},
                      {"volume", volume},
                      {"code", absl::StatusCodeToString(s.code())},
                      {"error", std::string(s.message())}});
  }
  return ToGrpcStatus(s);
}

}  // namespace cocostorage::csi
