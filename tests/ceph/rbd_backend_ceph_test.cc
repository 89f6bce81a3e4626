// The RBD backend (csi-driver/src/rbd_backend.cc) against a real Ceph cluster
// started for this suite (testing/ceph/ceph-cluster.sh): create, resize, list,
// quarantine and delete images by volume id; cephx and a dead monitor; and
// what the cluster holds of an image's bytes, read back at the RADOS level.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "cocostorage/common/strings.h"
#include "cocostorage/testing/status_matchers.h"
#include "plugin_harness.h"
#include "rbd_backend.h"
#include "rbd_mapper.h"
#include "test_ceph_cluster.h"

namespace cocostorage::csi {
namespace {

using ::cocostorage::testing::StatusIs;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t MiB = 1 << 20;

using ::cocostorage::testing::ReadWholeFile;
using ::cocostorage::testing::Shell;
using ::cocostorage::testing::TestCephCluster;
using ::cocostorage::testing::TrimNewlines;

class RbdBackendCephTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ceph_ = new TestCephCluster();
    const std::string error = ceph_->Start();
    ASSERT_EQ(error, "");
  }

  static void TearDownTestSuite() {
    delete ceph_;
    ceph_ = nullptr;
  }

  static RbdOptions Options() {
    RbdOptions o;
    o.mon_host = ceph_->mon_host();
    o.pool = "rbd";
    o.user = "csi";
    o.key = ceph_->csi_key();
    o.timeout = std::chrono::seconds(5);
    return o;
  }

  static std::unique_ptr<VolumeBackend> Backend(RbdOptions o = Options()) {
    auto b = NewRbdBackend(std::move(o));
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }

  static std::string Admin(const std::string& cmd) { return ceph_->Admin(cmd); }
  static std::string QemuSpec(const std::string& image) {
    return Cat("rbd:rbd/", image, ":conf=", ceph_->conf_path(), ":id=csi:keyring=", ceph_->csi_keyring());
  }

  static TestCephCluster* ceph_;
};

TestCephCluster* RbdBackendCephTest::ceph_ = nullptr;

TEST_F(RbdBackendCephTest, CreateIsIdempotentGrowsAndNeverShrinks) {
  auto b = Backend();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->Name(), "rbd");
  auto info = b->Create("pvc-a", 64 * MiB);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->device, "rbd:rbd/coco-vol-pvc-a");
  EXPECT_EQ(info->size_bytes, 64 * MiB);
  EXPECT_EQ(info->allocated_bytes, 0);  // thin: nothing written yet
  EXPECT_THAT(Admin("rbd info rbd/coco-vol-pvc-a"), HasSubstr("size 64 MiB"));

  auto again = b->Create("pvc-a", 64 * MiB);  // a retried CreateVolume
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->size_bytes, 64 * MiB);
  auto smaller = b->Create("pvc-a", 32 * MiB);
  ASSERT_TRUE(smaller.ok()) << smaller.status();
  EXPECT_EQ(smaller->size_bytes, 64 * MiB);
  auto grown = b->Expand("pvc-a", 96 * MiB);
  ASSERT_TRUE(grown.ok()) << grown.status();
  EXPECT_EQ(grown->size_bytes, 96 * MiB);
  auto not_shrunk = b->Expand("pvc-a", 16 * MiB);
  ASSERT_TRUE(not_shrunk.ok()) << not_shrunk.status();
  EXPECT_EQ(not_shrunk->size_bytes, 96 * MiB);
  auto st = b->Stat("pvc-a");
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->size_bytes, 96 * MiB);

  auto ids = b->List();
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, Contains("pvc-a"));
  EXPECT_TRUE(b->Check().ok());
  auto free_bytes = b->FreeBytes();
  ASSERT_TRUE(free_bytes.ok()) << free_bytes.status();
  EXPECT_GT(*free_bytes, 1024 * MiB);  // a 4 GiB OSD, size-1 pool
  EXPECT_LT(*free_bytes, 4096 * MiB);

  EXPECT_TRUE(b->Delete("pvc-a").ok());
  EXPECT_THAT(b->Stat("pvc-a").status(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("coco-vol-pvc-a")));
  EXPECT_TRUE(b->Delete("pvc-a").ok());  // a retried DeleteVolume
  EXPECT_THAT(b->Expand("pvc-a", 96 * MiB).status(), StatusIs(absl::StatusCode::kNotFound));
}

// What Ceph stores is exactly what the client wrote, object by object: the
// property the VM tests rely on to show the cluster only ever holds
// ciphertext. Written here through QEMU's rbd driver (the one the VM harness
// attaches images with), read back with `rados get`.
TEST_F(RbdBackendCephTest, BytesWrittenThroughQemuAreInTheImagesObjects) {
  auto b = Backend();
  ASSERT_NE(b, nullptr);
  auto info = b->Create("pvc-bytes", 16 * MiB);
  ASSERT_TRUE(info.ok()) << info.status();
  int rc = 0;
  std::string out =
      Shell(Cat("qemu-io -f raw -c 'write -P 0x5a 4194304 65536' '", QemuSpec("coco-vol-pvc-bytes"), "' 2>&1"), &rc);
  ASSERT_EQ(rc, 0) << out;
  auto st = b->Stat("pvc-bytes");
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_GE(st->allocated_bytes, 65536);  // one 4 MiB object exists now
  EXPECT_LE(st->allocated_bytes, 4 * MiB);

  // The image's data objects are rbd_data.<image id>.<object number, hex>.
  const std::string objects = Admin("rados -p rbd ls | grep '^rbd_data\\.' | sort");
  const std::string prefix =
      TrimNewlines(Admin("rbd info rbd/coco-vol-pvc-bytes | awk '/block_name_prefix/ {print $2}'"));
  ASSERT_FALSE(prefix.empty());
  const std::string second = Cat(prefix, ".0000000000000001");
  EXPECT_THAT(objects, HasSubstr(second));
  EXPECT_THAT(objects, Not(HasSubstr(Cat(prefix, ".0000000000000000"))));  // never written: never stored
  const std::string got = Cat(ceph_->dir(), "/object");
  (void)Admin(Cat("rados -p rbd get ", second, " ", got));
  const std::string bytes = ::cocostorage::testing::ReadWholeFile(got);
  ASSERT_GE(bytes.size(), 65536u);
  EXPECT_EQ(bytes.substr(0, 65536), std::string(65536, '\x5a'));
  EXPECT_TRUE(b->Delete("pvc-bytes").ok());
}

TEST_F(RbdBackendCephTest, QuarantineKeepsTheBytesUnderAnotherName) {
  auto b = Backend();
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(b->Create("pvc-q", 8 * MiB).ok());
  ASSERT_TRUE(b->Quarantine("pvc-q").ok());
  auto ids = b->List();
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, Not(Contains("pvc-q")));
  EXPECT_THAT(b->Stat("pvc-q").status(), StatusIs(absl::StatusCode::kNotFound));
  const std::string images = Admin("rbd ls rbd");
  EXPECT_THAT(images, HasSubstr("-pvc-q"));
  EXPECT_THAT(images, HasSubstr("coco-orphan-"));
  EXPECT_TRUE(b->Quarantine("pvc-q").ok());  // nothing left to set aside
}

TEST_F(RbdBackendCephTest, AWrongKeyIsPermissionDeniedAndNeverEchoed) {
  RbdOptions o = Options();
  o.key = TrimNewlines(Shell("ceph-authtool --gen-print-key"));
  ASSERT_FALSE(o.key.empty());
  const std::string wrong = o.key;
  auto b = Backend(std::move(o));
  ASSERT_NE(b, nullptr);
  auto info = b->Create("pvc-denied", 8 * MiB);
  EXPECT_THAT(info.status(), StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("client.csi")));
  EXPECT_THAT(std::string(info.status().message()), Not(HasSubstr(wrong)));
  EXPECT_THAT(Admin("rbd ls rbd"), Not(HasSubstr("pvc-denied")));
}

TEST_F(RbdBackendCephTest, ADeadMonitorIsUnavailableNotAHang) {
  RbdOptions o = Options();
  // A port nobody listens on (bound and released): the client hunts for a
  // monitor until its timeout, then gives up.
  const std::string port =
      TrimNewlines(Shell("/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); "
                         "print(s.getsockname()[1])'"));
  o.mon_host = Cat("v2:127.0.0.1:", port);
  o.timeout = std::chrono::seconds(2);
  auto b = Backend(std::move(o));
  ASSERT_NE(b, nullptr);
  EXPECT_THAT(b->Check(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("did not answer")));
  EXPECT_THAT(b->Create("pvc-x", 8 * MiB).status(), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(RbdBackendCephTest, AnUnknownPoolIsNamed) {
  RbdOptions o = Options();
  o.pool = "no-such-pool";
  auto b = Backend(std::move(o));
  ASSERT_NE(b, nullptr);
  EXPECT_THAT(b->Create("pvc-x", 8 * MiB).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("opening pool no-such-pool")));
}

// KrbdMapper's command lines run by the real rbd binary against this cluster:
// the flags, -c /dev/null and the key in CEPH_ARGS are accepted, and rbd's
// failures map like librbd's. Mapping itself needs the kernel's rbd module;
// where it is absent (CI) the map of an existing image stops at the kernel
// (NOT_FOUND), everything before it is proven.
TEST_F(RbdBackendCephTest, KrbdMapperDrivesTheRbdCli) {
  auto b = Backend();
  ASSERT_NE(b, nullptr);
  auto info = b->Create("pvc-map", 8 * MiB);
  ASSERT_TRUE(info.ok()) << info.status();
  auto ref = ParseRbdDeviceRef(info->device);
  ASSERT_TRUE(ref.ok()) << ref.status();
  std::shared_ptr<CommandRunner> runner = NewSystemCommandRunner();
  // No sysfs check: rbd itself shows how far a map gets on this host.
  auto m = NewKrbdMapper(runner, std::chrono::seconds(10), "");
  ASSERT_TRUE(m.ok()) << m.status();

  // list and unmap run without monitors or a key (the kernel's side).
  EXPECT_EQ(*(*m)->MappedDevice(*ref), "");
  EXPECT_TRUE((*m)->Unmap(*ref).ok());  // not mapped: nothing to do
  EXPECT_THAT((*m)->Map(Options(), RbdImageRef{"rbd", "coco-vol-no-such"}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("coco-vol-no-such")));

  struct stat st {};
  if (stat("/sys/bus/rbd", &st) == 0) {
    auto dev = (*m)->Map(Options(), *ref);
    ASSERT_TRUE(dev.ok()) << dev.status();
    EXPECT_EQ(*(*m)->Map(Options(), *ref), *dev);  // a retried map reuses the device
    EXPECT_TRUE((*m)->Unmap(*ref).ok());
    EXPECT_EQ(*(*m)->MappedDevice(*ref), "");
  } else {
    EXPECT_THAT((*m)->Map(Options(), *ref), StatusIs(absl::StatusCode::kNotFound));
  }

  RbdOptions wrong = Options();
  wrong.key = TrimNewlines(Shell("ceph-authtool --gen-print-key"));
  ASSERT_FALSE(wrong.key.empty());
  auto denied = (*m)->Map(wrong, *ref);
  EXPECT_THAT(denied, StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(std::string(denied.status().message()), Not(HasSubstr(wrong.key)));

  RbdOptions dead = Options();
  dead.mon_host = Cat("v2:127.0.0.1:", TrimNewlines(Shell("/usr/bin/python3 -c 'import socket; s=socket.socket(); "
                                                          "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")));
  dead.timeout = std::chrono::seconds(2);
  EXPECT_THAT((*m)->Map(dead, *ref), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_TRUE(b->Delete("pvc-map").ok());
}

// The real plugin binary with --backend=rbd against this cluster, over its
// socket as the external-provisioner and kubelet call it: the composition root
// wires the cluster backend, the plugin's own Secret and the request's secrets.
TEST_F(RbdBackendCephTest, ThePluginServesRbdVolumes) {
  namespace pb = ::csi::v1;
  csi::testing::TempDir tmp;
  const std::string secret_dir = tmp.path() + "/secret";
  ASSERT_EQ(mkdir(secret_dir.c_str(), 0700), 0);
  std::ofstream(secret_dir + "/userID") << "csi\n";
  std::ofstream(secret_dir + "/userKey") << ceph_->csi_key() << "\n";
  csi::testing::PluginProcess plugin(CSI_PLUGIN_BINARY, tmp.path(),
                                     {"--backend=rbd", "--rbd-monitors=" + ceph_->mon_host(),
                                      "--rbd-secret-dir=" + secret_dir, "--rbd-timeout-seconds=5"});
  ASSERT_TRUE(plugin.Start()) << ReadWholeFile(plugin.log_path());
  auto controller = pb::Controller::NewStub(plugin.channel());
  auto node = pb::Node::NewStub(plugin.channel());

  auto req = csi::testing::CreateReq("pvc-plugin", 32 * MiB, csi::testing::BlockCap());
  (*req.mutable_parameters())["pool"] = "rbd";  // the monitors are the plugin's
  (*req.mutable_secrets())["userID"] = "csi";
  (*req.mutable_secrets())["userKey"] = ceph_->csi_key();
  pb::CreateVolumeResponse created;
  grpc::Status s = controller->CreateVolume(csi::testing::Ctx().get(), req, &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string id = created.volume().volume_id();
  EXPECT_EQ(created.volume().accessible_topology_size(), 0);
  EXPECT_EQ(id.rfind("rbd-rbd-", 0), 0u) << id;
  EXPECT_EQ(created.volume().volume_context().count("monitors"), 0u);  // the plugin's, never recorded
  EXPECT_THAT(Admin(Cat("rbd info rbd/coco-vol-", id)), HasSubstr("size 32 MiB"));

  // A key cephx refuses: PERMISSION_DENIED, the key in no message or log.
  auto wrong = req;
  const std::string wrong_key = TrimNewlines(Shell("ceph-authtool --gen-print-key"));
  wrong.set_name("pvc-denied");
  (*wrong.mutable_secrets())["userKey"] = wrong_key;
  pb::CreateVolumeResponse denied;
  s = controller->CreateVolume(csi::testing::Ctx().get(), wrong, &denied);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_THAT(s.error_message(), Not(HasSubstr(wrong_key)));

  // The pool's free space, with the plugin's own credentials.
  pb::GetCapacityRequest cap;
  (*cap.mutable_parameters())["monitors"] = ceph_->mon_host();
  (*cap.mutable_parameters())["pool"] = "rbd";
  pb::GetCapacityResponse capacity;
  s = controller->GetCapacity(csi::testing::Ctx().get(), cap, &capacity);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string df = Admin("ceph df -f json");
  auto avail = PoolMaxAvailFromDf(df, "rbd");
  ASSERT_TRUE(avail.ok()) << avail.status();
  EXPECT_GT(capacity.available_capacity(), 0);
  EXPECT_NEAR(static_cast<double>(capacity.available_capacity()), static_cast<double>(*avail), 0.05 * *avail);

  pb::ControllerExpandVolumeRequest ex;
  ex.set_volume_id(id);
  ex.mutable_capacity_range()->set_required_bytes(48 * MiB);
  *ex.mutable_secrets() = req.secrets();
  pb::ControllerExpandVolumeResponse expanded;
  s = controller->ControllerExpandVolume(csi::testing::Ctx().get(), ex, &expanded);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(Admin(Cat("rbd info rbd/coco-vol-", id)), HasSubstr("size 48 MiB"));

  // NodeStage runs the real `rbd device map`; without the kernel module (CI
  // hosts) it fails cleanly and stages nothing.
  const std::string kubelet = plugin.kubelet_root();
  const std::string staging = kubelet + "/staging";
  ASSERT_EQ(mkdir(kubelet.c_str(), 0750), 0);
  ASSERT_EQ(mkdir(staging.c_str(), 0750), 0);
  pb::NodeStageVolumeRequest stage;
  stage.set_volume_id(id);
  stage.set_staging_target_path(staging);
  *stage.mutable_volume_capability() = csi::testing::BlockCap();
  *stage.mutable_volume_context() = created.volume().volume_context();
  *stage.mutable_secrets() = req.secrets();
  pb::NodeStageVolumeResponse staged;
  struct stat st {};
  if (stat("/sys/bus/rbd", &st) != 0) {
    s = node->NodeStageVolume(csi::testing::Ctx().get(), stage, &staged);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("rbd kernel module"));
  }

  // Another node's plugin (its own state dir: no record of the volume)
  // deletes it from the id alone; a retry is idempotent.
  plugin.Stop();
  controller.reset();
  node.reset();
  ASSERT_EQ(system(Cat("rm -rf ", plugin.state_dir()).c_str()), 0);
  ASSERT_TRUE(plugin.Start()) << ReadWholeFile(plugin.log_path());
  controller = pb::Controller::NewStub(plugin.channel());
  pb::DeleteVolumeRequest del;
  del.set_volume_id(id);
  *del.mutable_secrets() = req.secrets();
  pb::DeleteVolumeResponse deleted;
  s = controller->DeleteVolume(csi::testing::Ctx().get(), del, &deleted);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(Admin("rbd ls -p rbd"), Not(HasSubstr(Cat("coco-vol-", id))));
  s = controller->DeleteVolume(csi::testing::Ctx().get(), del, &deleted);
  EXPECT_TRUE(s.ok()) << s.error_message();
  const std::string log = ReadWholeFile(plugin.log_path());
  EXPECT_THAT(log, Not(HasSubstr(ceph_->csi_key())));
  EXPECT_THAT(log, Not(HasSubstr(wrong_key)));
}

}  // namespace
}  // namespace cocostorage::csi
