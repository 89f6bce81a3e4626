#include "cocostorage/common/grpc_util.h"

namespace cocostorage {

grpc::Status ToGrpcStatus(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  // Values are identical by design (absl mirrors the gRPC code space).
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return OkStatus();
  return Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace cocostorage
