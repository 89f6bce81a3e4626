// Helpers between the csi.v1 wire types and our logic, shared by the three
// service files: capability parsing, map conversion, and the single RPC exit
// point that logs the outcome and converts Status to grpc::Status.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "cocostorage/common/status.h"
#include "csi/v1/csi.pb.h"
#include "volume_state.h"

namespace cocostorage::csi {

namespace pb = ::csi::v1;

struct Capability {
  VolumeMode mode = VolumeMode::kFilesystem;
  int access_mode = 0;
  std::string fs_type;                  // mount only; may be empty
  std::vector<std::string> mount_flags;  // mount only
  std::string mount_group;              // mount only; decimal gid or empty
};

// INVALID_ARGUMENT for a capability we cannot serve: no access type, an
// unknown or multi-node access mode (a direct-assigned device belongs to one
// VM), SINGLE_NODE_MULTI_WRITER, an unsupported fs type or malformed flags.
StatusOr<Capability> ParseCapability(const pb::VolumeCapability& cap);

std::map<std::string, std::string> ToStdMap(const google::protobuf::Map<std::string, std::string>& m);

// Logs "rpc" with method, volume, code and message; returns the wire status.
grpc::Status Reply(std::string_view method, std::string_view volume, const Status& s);

}  // namespace cocostorage::csi
