// The RBD backend's pure parts: image names, error mapping, the monitors' df
// answer, option validation. The backend against a real cluster is
// tests/ceph (label ceph).
#include "rbd_backend.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <map>
#include <string>

#include "cocostorage/testing/status_matchers.h"

namespace cocostorage::csi {
namespace {

using ::cocostorage::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(RbdNames, VolumesAndOrphansAreTellApart) {
  EXPECT_EQ(RbdImageName("pvc-1a.b_c"), "coco-vol-pvc-1a.b_c");
  EXPECT_EQ(RbdVolumeIdOf("coco-vol-pvc-1a.b_c"), "pvc-1a.b_c");
  EXPECT_EQ(RbdOrphanName("pvc-1", 1700000000), "coco-orphan-1700000000-pvc-1");
  EXPECT_EQ(RbdVolumeIdOf(RbdOrphanName("pvc-1", 1)), "");  // a quarantined image is no volume
  EXPECT_EQ(RbdVolumeIdOf("coco-vol-"), "");
  EXPECT_EQ(RbdVolumeIdOf("coco-vol-a/b"), "");  // not an id this plugin would make
  EXPECT_EQ(RbdVolumeIdOf("someone-elses-image"), "");
  EXPECT_EQ(RbdDeviceRef("rbd", "coco-vol-x"), "rbd:rbd/coco-vol-x");
}

TEST(RbdStatusTest, ErrnoValuesMapToTheCodesACallerActsOn) {
  EXPECT_TRUE(RbdStatus(0, "x").ok());
  EXPECT_THAT(RbdStatus(-ETIMEDOUT, "connecting"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("did not answer")));
  EXPECT_THAT(RbdStatus(-EACCES, "connecting"), StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("cephx")));
  EXPECT_THAT(RbdStatus(-EPERM, "x"), StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(RbdStatus(-ENOENT, "opening image coco-vol-a"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("coco-vol-a")));
  EXPECT_THAT(RbdStatus(-ENOSPC, "x"), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(RbdStatus(-EDQUOT, "x"), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(PoolMaxAvail, ReadsThePoolsEntry) {
  const char* df = R"({"stats":{"total_bytes":4294967296},"pools":[
      {"name":"other","id":1,"stats":{"max_avail":5}},
      {"name":"rbd","id":2,"stats":{"stored":0,"max_avail":3865470566}}]})";
  auto avail = PoolMaxAvailFromDf(df, "rbd");
  ASSERT_TRUE(avail.ok()) << avail.status();
  EXPECT_EQ(*avail, 3865470566);
  EXPECT_THAT(PoolMaxAvailFromDf(df, "missing"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(PoolMaxAvailFromDf("not json", "rbd"), StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(PoolMaxAvailFromDf(R"({"pools":[{"name":"rbd","stats":{"max_avail":-1}}]})", "rbd"),
              StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(PoolMaxAvailFromDf(R"({"pools":{}})", "rbd"), StatusIs(absl::StatusCode::kInternal));
}

TEST(RbdOptionsTest, EachMissingOrBadFieldIsNamed) {
  RbdOptions ok{.mon_host = "v2:127.0.0.1:3300", .pool = "rbd", .user = "csi", .key = "AQ=="};
  EXPECT_TRUE(ValidateRbdOptions(ok).ok());
  auto with = [&](auto change) {
    RbdOptions o = ok;
    change(o);
    return ValidateRbdOptions(o);
  };
  EXPECT_THAT(with([](RbdOptions& o) { o.mon_host.clear(); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("mon_host")));
  EXPECT_THAT(with([](RbdOptions& o) { o.pool = "a/b"; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pool")));
  EXPECT_THAT(with([](RbdOptions& o) { o.user = "client.csi"; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("client.")));
  EXPECT_THAT(with([](RbdOptions& o) { o.key.clear(); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("key")));
  EXPECT_THAT(with([](RbdOptions& o) { o.timeout = std::chrono::seconds(0); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("timeout")));
  auto bad = NewRbdBackend(RbdOptions{});
  EXPECT_THAT(bad.status(), StatusIs(absl::StatusCode::kInvalidArgument));
  // The key is never echoed, even in a refusal.
  RbdOptions secret = ok;
  secret.pool.clear();
  secret.key = "AQBsecretsecretsecret==";
  EXPECT_THAT(ValidateRbdOptions(secret), StatusIs(absl::StatusCode::kInvalidArgument, Not(HasSubstr("AQBsecret"))));
}

TEST(RbdOptionsFromCsiTest, ReadsCephCsiParametersAndSecrets) {
  const std::map<std::string, std::string> params = {
      {"monitors", "v2:10.0.0.1:3300,v2:10.0.0.2:3300"},
      {"pool", "replicapool"},
      {"csi.storage.k8s.io/provisioner-secret-name", "rook-csi-rbd-provisioner"},
      {"keySource", "kbs"}};
  const std::map<std::string, std::string> secrets = {{"userID", "csi-rbd-provisioner"},
                                                      {"userKey", "AQBsecretsecretsecret=="}};
  auto o = RbdOptionsFromCsi(params, secrets);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->mon_host, "v2:10.0.0.1:3300,v2:10.0.0.2:3300");
  EXPECT_EQ(o->pool, "replicapool");
  EXPECT_EQ(o->user, "csi-rbd-provisioner");
  EXPECT_EQ(o->key, "AQBsecretsecretsecret==");
  EXPECT_EQ(o->timeout, std::chrono::seconds(10));

  auto without = [&](std::map<std::string, std::string> m, const std::string& k) {
    m.erase(k);
    return m;
  };
  EXPECT_THAT(RbdOptionsFromCsi(without(params, "monitors"), secrets),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("monitors")));
  EXPECT_THAT(RbdOptionsFromCsi(without(params, "pool"), secrets),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pool")));
  auto no_key = RbdOptionsFromCsi(params, without(secrets, "userKey"));
  EXPECT_THAT(no_key, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("secret-name")));
  EXPECT_THAT(RbdOptionsFromCsi(params, {}), StatusIs(absl::StatusCode::kInvalidArgument));
  // A bad user is named; the key never appears in any message.
  auto bad_user = RbdOptionsFromCsi(params, {{"userID", "client.admin"}, {"userKey", "AQBsecretsecretsecret=="}});
  EXPECT_THAT(bad_user, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("client.")));
  EXPECT_THAT(std::string(bad_user.status().message()), Not(HasSubstr("AQBsecret")));
}

}  // namespace
}  // namespace cocostorage::csi
