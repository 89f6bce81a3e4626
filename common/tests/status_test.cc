#include "cocostorage/common/status.h"

#include <gtest/gtest.h>

#include <cerrno>

#include "cocostorage/common/grpc_util.h"

namespace cocostorage {
namespace {

StatusOr<int> Half(int v) {
  if (v % 2 != 0) return absl::InvalidArgumentError("odd");
  return v / 2;
}

StatusOr<int> Quarter(int v) {
  COCO_ASSIGN_OR_RETURN(int h, Half(v));
  COCO_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(StatusTest, ErrnoMapsToGrpcCodes) {
  EXPECT_EQ(ErrnoStatus(ENOENT, "open x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrnoStatus(EACCES, "open x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrnoStatus(ENOSPC, "write").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoStatus(EIO, "read").code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ErrnoStatus(ENOENT, "opening /dev/vdz").message(), "opening /dev/vdz: No such file or directory");
}

TEST(StatusTest, AssignOrReturnPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StatusTest, GrpcRoundTripKeepsCodeAndMessage) {
  Status s = absl::AlreadyExistsError("volume v1 exists with other parameters");
  grpc::Status g = ToGrpcStatus(s);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(FromGrpcStatus(g), s);
  EXPECT_TRUE(ToGrpcStatus(OkStatus()).ok());
}

TEST(StatusTest, AnnotateKeepsCode) {
  Status s = Annotate(absl::NotFoundError("no such device"), "activating v1");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "activating v1: no such device");
}

}  // namespace
}  // namespace cocostorage
