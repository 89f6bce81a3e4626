#include "csi_util.h"

#include "cocostorage/common/grpc_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "params.h"

namespace cocostorage::csi {

StatusOr<Capability> ParseCapability(const pb::VolumeCapability& cap) {
  Capability c;
  using Mode = pb::VolumeCapability::AccessMode;
  switch (cap.access_mode().mode()) {
    case Mode::SINGLE_NODE_WRITER:
    case Mode::SINGLE_NODE_READER_ONLY:
    case Mode::SINGLE_NODE_SINGLE_WRITER:
      c.access_mode = cap.access_mode().mode();
      break;
    case Mode::UNKNOWN:
      return absl::InvalidArgumentError("volume capability: access_mode is required");
    default:
      return absl::InvalidArgumentError(
          Cat("volume capability: access mode ", Mode::Mode_Name(cap.access_mode().mode()),
              " is not supported (a direct-assigned volume serves a single pod on a single node)"));
  }
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

std::map<std::string, std::string> ToStdMap(const google::protobuf::Map<std::string, std::string>& m) {
  return std::map<std::string, std::string>(m.begin(), m.end());
}

grpc::Status Reply(std::string_view method, std::string_view volume, const Status& s) {
  if (s.ok()) {
    log::Info("rpc", {{"method", std::string(method)}, {"volume", std::string(volume)}, {"code", "OK"}});
  } else {
    log::Warn("rpc", {{"method", std::string(method)},
                      {"volume", std::string(volume)},
                      {"code", absl::StatusCodeToString(s.code())},
                      {"error", std::string(s.message())}});
  }
  return ToGrpcStatus(s);
}

}  // namespace cocostorage::csi
