// The one conversion point between our Status and grpc::Status.
#pragma once

#include <grpcpp/grpcpp.h>

#include "cocostorage/common/status.h"

namespace cocostorage {

grpc::Status ToGrpcStatus(const Status& s);
Status FromGrpcStatus(const grpc::Status& s);

}  // namespace cocostorage
