// Persistent volumes on Ceph RBD, end to end (issue 13): the real RBD
// backend provisions an image in a real single-node cluster; the VM harness
// attaches it to the guest through QEMU's rbd driver (what `rbd device map`
// plus Kata's hot-plug give a real node); the agent creates and opens the
// volume with a key from the test KBS. Pod 1's data is read by pod 2 in a new
// VM; the cluster's objects never hold the plaintext; a swapped image is
// refused; an attached image is not deleted under the guest.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "agent_vm_support.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/testing/status_matchers.h"
#include "kbs_guest.h"
#include "plugin_harness.h"
#include "rbd_backend.h"
#include "test_ceph_cluster.h"
#include "test_kbs_process.h"

namespace cocostorage::vmtest {
namespace {

using ::cocostorage::csi::NewRbdBackend;
using ::cocostorage::csi::RbdImageName;
using ::cocostorage::csi::RbdOptions;
using ::cocostorage::csi::VolumeBackend;
using ::cocostorage::testing::TestCephCluster;
using ::cocostorage::testing::TestKbsProcess;
using ::testing::HasSubstr;

constexpr int64_t MiB = 1 << 20;
constexpr char kKeyHex[] = "5b0f1c2ab06d3e4f5a697b8c9dae0f1021324354657687a9babcddeef0011223";
constexpr char kOtherKeyHex[] = "a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8e9f";
// Written by pod 1; looked for in every RADOS object of the image.
constexpr char kMarker[] = "COCO-PLAINTEXT-MARKER-0123456789";

pb::ActivateVolumeRequest WithKey(pb::ActivateVolumeRequest r, const std::string& uri) {
  r.mutable_key()->set_kbs_resource_uri(uri);
  return r;
}

class RbdVmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ceph_ = new TestCephCluster();
    const std::string error = ceph_->Start();
    ASSERT_EQ(error, "");
    RbdOptions o;
    o.mon_host = ceph_->mon_host();
    o.user = "csi";
    o.key = ceph_->csi_key();
    auto b = NewRbdBackend(o);
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = b->release();
    dir_ = new std::string(MakeTempDir("coco-rbd-vm"));
    kbs_ = new TestKbsProcess(*dir_, {"10.0.2.2", "127.0.0.1"});
    ASSERT_TRUE(kbs_->Start({{"resources",
                              {{"default/keys/pg-1", {{"hex", kKeyHex}}},
                               {"default/keys/pg-2", {{"hex", kKeyHex}}},
                               {"default/keys/pg-other", {{"hex", kOtherKeyHex}}}}},
                             {"allowed_tees", {"sample"}},
                             {"policy", {{"default", "allow"}}}},
                            0));
    Reboot();
  }

  static void TearDownTestSuite() {
    delete agent_;
    agent_ = nullptr;
    vm_.reset();
    delete kbs_;
    if (dir_ != nullptr) rmdir(dir_->c_str());
    delete dir_;
    delete backend_;
    delete ceph_;
  }

  static void Reboot() {
    delete agent_;
    agent_ = nullptr;
    vm_.reset();
    auto vm = BootKbsGuest(*kbs_);
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_ = std::move(*vm);
    agent_ = new AgentClient(vm_->AgentTarget());
  }

  void TearDown() override {
    if (HasFailure() && vm_ != nullptr) std::cerr << AgentLogTail(vm_.get());
  }

  std::string Guest(const std::string& cmd) {
    auto r = vm_->Exec(cmd, std::chrono::minutes(5), {.merge_output = true});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->out : "";
  }

  // The volume's image, attached the way a node's mapped RBD device is.
  StatusOr<std::string> Attach(const std::string& volume, const std::string& qemu_id) {
    return AttachImage(RbdImageName(volume), qemu_id);
  }
  StatusOr<std::string> AttachImage(const std::string& image, const std::string& qemu_id) {
    HotplugOptions h;
    h.rbd = HotplugOptions::Rbd{ceph_->conf_path(), "rbd", image, "csi", ceph_->csi_key()};
    return vm_->Hotplug("", qemu_id, qemu_id, h);
  }

  static TestCephCluster* ceph_;
  static VolumeBackend* backend_;
  static std::string* dir_;
  static TestKbsProcess* kbs_;
  static std::unique_ptr<GuestVm> vm_;
  static AgentClient* agent_;
};

TestCephCluster* RbdVmTest::ceph_ = nullptr;
VolumeBackend* RbdVmTest::backend_ = nullptr;
std::string* RbdVmTest::dir_ = nullptr;
TestKbsProcess* RbdVmTest::kbs_ = nullptr;
std::unique_ptr<GuestVm> RbdVmTest::vm_;
AgentClient* RbdVmTest::agent_ = nullptr;

// The real plugin (--backend=rbd) provisions the image, as the external-
// provisioner asks it to; QEMU's rbd driver stands in for the node's kernel
// map (no rbd module on CI hosts).
TEST_F(RbdVmTest, PodDataOutlivesTheVmAndCephHoldsOnlyCiphertext) {
  const std::string uri = "kbs:///default/keys/pg-1";
  csi::testing::TempDir plugin_dir;
  csi::testing::PluginProcess plugin(CSI_PLUGIN_BINARY, plugin_dir.path(),
                                     {"--backend=rbd", "--rbd-monitors=" + ceph_->mon_host()});
  ASSERT_TRUE(plugin.Start());
  auto controller = ::csi::v1::Controller::NewStub(plugin.channel());
  auto create = csi::testing::CreateReq("data-pg-0", 256 * MiB);
  (*create.mutable_parameters())["pool"] = "rbd";
  (*create.mutable_parameters())["keySource"] = "kbs";
  (*create.mutable_parameters())["kbsResourceUri"] = uri;
  (*create.mutable_secrets())["userID"] = "csi";
  (*create.mutable_secrets())["userKey"] = ceph_->csi_key();
  ::csi::v1::CreateVolumeResponse created;
  grpc::Status cs = controller->CreateVolume(csi::testing::Ctx().get(), create, &created);
  ASSERT_TRUE(cs.ok()) << cs.error_message();
  const std::string image = RbdImageName(created.volume().volume_id());
  auto delete_volume = [&] {
    ::csi::v1::DeleteVolumeRequest del;
    del.set_volume_id(created.volume().volume_id());
    *del.mutable_secrets() = create.secrets();
    ::csi::v1::DeleteVolumeResponse resp;
    return controller->DeleteVolume(csi::testing::Ctx().get(), del, &resp);
  };
  const std::string target = Cat(kStorageRoot, "/pg-1");
  KernelLogCursor kernel(vm_.get());

  // Pod 1: the blank image becomes the volume.
  auto pci = AttachImage(image, "pg1");
  ASSERT_TRUE(pci.ok()) << pci.status();
  grpc::Status st = agent_->Activate(WithKey(FsRequest("pg-1", *pci, "ext4"), uri));
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(LastActivationAction(vm_.get(), "pg-1"), "create");
  // 8 MiB of the marker (so it would be in many objects in the clear), and
  // random bytes whose digest pod 2 checks.
  Guest(Cat("yes ", kMarker, " | head -c 8388608 > ", target, "/table && head -c 16777216 /dev/urandom > ", target,
            "/rows && sync"));
  const std::string sha = Guest(Cat("sha256sum < ", target, "/rows | cut -c1-64"));
  ASSERT_EQ(sha.size(), 65u) << sha;
  ASSERT_TRUE(agent_->Deactivate("pg-1").ok());
  ASSERT_TRUE(vm_->Unplug("pg1").ok());
  auto errors = kernel.NewErrors();
  ASSERT_TRUE(errors.ok()) << errors.status();
  EXPECT_TRUE(errors->empty()) << Join(*errors, "\n");

  // What the cluster stores: many objects, none with the plaintext.
  const std::string objects = ceph_->ImageObjects("rbd", image);
  EXPECT_GT(objects.size(), 24u * MiB) << "the image's objects should hold the 24 MiB written and more";
  EXPECT_EQ(objects.find(kMarker), std::string::npos) << "plaintext in a RADOS object";
  EXPECT_EQ(objects.find("COCO-PLAINTEXT"), std::string::npos);

  // Pod 2 in another VM (the first is gone): the same image, opened.
  Reboot();
  KernelLogCursor kernel2(vm_.get());
  pci = AttachImage(image, "pg1");
  ASSERT_TRUE(pci.ok()) << pci.status();
  st = agent_->Activate(WithKey(FsRequest("pg-1", *pci, "ext4"), uri));
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(LastActivationAction(vm_.get(), "pg-1"), "open");
  EXPECT_EQ(Guest(Cat("sha256sum < ", target, "/rows | cut -c1-64")), sha);
  EXPECT_EQ(Guest(Cat("head -c 32 ", target, "/table")), kMarker);

  // An image attached to a VM is not deleted under it (DeleteVolume fails
  // cleanly and can be retried once the pod is gone).
  grpc::Status ds = delete_volume();
  EXPECT_EQ(ds.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << ds.error_message();
  EXPECT_THAT(ds.error_message(), HasSubstr("watchers"));
  EXPECT_EQ(Guest(Cat("sha256sum < ", target, "/rows | cut -c1-64")), sha);
  ASSERT_TRUE(agent_->Deactivate("pg-1").ok());
  ASSERT_TRUE(vm_->Unplug("pg1").ok());
  errors = kernel2.NewErrors();
  ASSERT_TRUE(errors.ok()) << errors.status();
  EXPECT_TRUE(errors->empty()) << Join(*errors, "\n");

  // Deleted: its objects are gone, and so is any way to attach it.
  ds = delete_volume();
  EXPECT_TRUE(ds.ok()) << ds.error_message();
  EXPECT_FALSE(AttachImage(image, "pg1").ok());
}

// The host presents pg-2's image where pg-1 is asked for (two volumes of the
// same workload, same KBS root), or pg-1's image with another key: refused
// before anything is written.
TEST_F(RbdVmTest, ASwappedImageOrAWrongKeyIsRefusedUntouched) {
  for (const char* v : {"pg-1", "pg-2"}) {
    ASSERT_TRUE(backend_->Create(v, 128 * MiB).ok());
    auto pci = Attach(v, "pg");
    ASSERT_TRUE(pci.ok()) << pci.status();
    grpc::Status st = agent_->Activate(WithKey(FsRequest(v, *pci, "ext4"), Cat("kbs:///default/keys/", v)));
    ASSERT_TRUE(st.ok()) << v << ": " << st.error_message();
    ASSERT_TRUE(agent_->Deactivate(v).ok());
    ASSERT_TRUE(vm_->Unplug("pg").ok());
  }
  const std::string before = ceph_->ImageObjects("rbd", RbdImageName("pg-2"));
  auto pci = Attach("pg-2", "pg");
  ASSERT_TRUE(pci.ok()) << pci.status();
  AgentClient once(vm_->AgentTarget(), RetryPolicy{.attempts = 1});
  grpc::Status st = once.Activate(WithKey(FsRequest("pg-1", *pci, "ext4"), "kbs:///default/keys/pg-1"));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("foreign_volume"));
  EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n");
  ASSERT_TRUE(vm_->Unplug("pg").ok());
  EXPECT_TRUE(ceph_->ImageObjects("rbd", RbdImageName("pg-2")) == before) << "the refused activation wrote to pg-2";

  const std::string pg1 = ceph_->ImageObjects("rbd", RbdImageName("pg-1"));
  pci = Attach("pg-1", "pg");
  ASSERT_TRUE(pci.ok()) << pci.status();
  st = once.Activate(WithKey(FsRequest("pg-1", *pci, "ext4"), "kbs:///default/keys/pg-other"));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("wrong_key"));
  EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n");
  ASSERT_TRUE(vm_->Unplug("pg").ok());
  EXPECT_TRUE(ceph_->ImageObjects("rbd", RbdImageName("pg-1")) == pg1) << "the refused activation wrote to pg-1";
  EXPECT_TRUE(backend_->Delete("pg-1").ok());
  EXPECT_TRUE(backend_->Delete("pg-2").ok());
}

}  // namespace
}  // namespace cocostorage::vmtest
