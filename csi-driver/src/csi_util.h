// Helpers between the csi.v1 wire types and our logic, shared by the three
// service files: capability parsing, map conversion, and the single RPC exit
// point that logs the outcome and converts Status to grpc::Status.
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cocostorage/common/status.h"
#include "csi/v1/csi.pb.h"
#include "volume_state.h"

namespace cocostorage::csi {

namespace pb = ::csi::v1;

struct Capability {
  VolumeMode mode = VolumeMode::kFilesystem;
  int access_mode = 0;
  std::string fs_type;                   // mount only; may be empty
  std::vector<std::string> mount_flags;  // mount only
  std::string mount_group;               // mount only; decimal gid or empty
};

// INVALID_ARGUMENT for a malformed capability: no access type, a missing or
// unknown access mode, an unsupported fs type or malformed flags. Every
// well-formed access mode parses, multi-node ones included: whether the
// volume serves it is the caller's call (RequireSingleNode), because the spec
// wants a different code per RPC.
StatusOr<Capability> ParseCapability(const pb::VolumeCapability& cap);

// The four SINGLE_NODE_* modes. Kubernetes sends ReadWriteOnce as
// SINGLE_NODE_MULTI_WRITER (we advertise it), ReadWriteOncePod as
// SINGLE_NODE_SINGLE_WRITER, ReadOnlyMany as MULTI_NODE_READER_ONLY.
bool IsSingleNodeMode(int access_mode);
// `code` with a message when `cap` asks for a multi-node mode: one
// direct-assigned device is hot-plugged into one VM, never shared across
// nodes. (CreateVolume and the expand calls: INVALID_ARGUMENT; NodeStage and
// NodePublish: FAILED_PRECONDITION, the spec's "exceeds capabilities".)
Status RequireSingleNode(const Capability& cap, absl::StatusCode code);

// Whether `volume` serves `cap`: a single-node mode, the volume's mode (block
// vs. filesystem) and, for mount capabilities naming one, its fs type.
// `code` otherwise (FAILED_PRECONDITION at NodeStage/NodePublish,
// INVALID_ARGUMENT at the expand calls, as the spec's tables say).
Status CheckCapabilityFits(const VolumeRecord& volume, const Capability& cap, absl::StatusCode code);

std::map<std::string, std::string> ToStdMap(const google::protobuf::Map<std::string, std::string>& m);

// Logs "rpc" with method, volume, code and message; returns the wire status.
grpc::Status Reply(std::string_view method, std::string_view volume, const Status& s);

}  // namespace cocostorage::csi
