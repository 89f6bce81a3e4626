// CSI conformance suite: drives the real cocostorage-csi binary over its unix
// socket like kubelet (node calls) and the external-provisioner (controller
// calls) do. Every RPC with valid, repeated, concurrent and invalid requests,
// capacity accounting, and restarts in the middle of a pod's life cycle.
#include <dirent.h>
#include <fcntl.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "params.h"
#include "plugin_harness.h"

namespace cocostorage::csi {
namespace {

using namespace testing;  // NOLINT
using AM = pb::VolumeCapability::AccessMode;
using google::protobuf::util::MessageDifferencer;

constexpr int64_t kMi = 1 << 20;
constexpr int64_t kGi = int64_t{1} << 30;
constexpr int64_t kCapacity = 100 * kGi;  // thin: nothing is allocated on disk

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// chattr +i / -i, as an operator with CAP_LINUX_IMMUTABLE would.
bool SetImmutable(const std::string& dir, bool on) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  int flags = 0;
  bool ok = ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
  flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
  ok = ok && ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
  close(fd);
  return ok;
}

bool IsImmutable(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  int flags = 0;
  bool ok = ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && (flags & FS_IMMUTABLE_FL) != 0;
  close(fd);
  return ok;
}

bool Exists(const std::string& p) {
  struct stat st {};
  return lstat(p.c_str(), &st) == 0;
}

unsigned Mode(const std::string& p) {
  struct stat st {};
  if (lstat(p.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

class CsiConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kubelet_ = tmp_.path() + "/kubelet";
    ASSERT_EQ(mkdir(kubelet_.c_str(), 0750), 0);
    StartPlugin();
  }

  void StartPlugin(std::vector<std::string> extra = {"--capacity-bytes=" + std::to_string(kCapacity)}) {
    extra_ = extra;
    plugin_ = std::make_unique<PluginProcess>(CSI_PLUGIN_BINARY, tmp_.path(), extra);
    ASSERT_TRUE(plugin_->Start()) << "plugin did not start; log:\n" << ReadFile(plugin_->log_path());
    identity_ = pb::Identity::NewStub(plugin_->channel());
    controller_ = pb::Controller::NewStub(plugin_->channel());
    node_ = pb::Node::NewStub(plugin_->channel());
  }

  // SIGTERM (drain), then the same binary with the same directories again.
  void DropStubs() {
    identity_.reset();
    controller_.reset();
    node_.reset();
  }

  void RestartPlugin() {
    DropStubs();
    int st = plugin_->Stop(SIGTERM);
    ASSERT_TRUE(WIFEXITED(st)) << st;
    ASSERT_EQ(WEXITSTATUS(st), 0);
    StartPlugin(extra_);
  }

  grpc::Status Create(const pb::CreateVolumeRequest& req, pb::CreateVolumeResponse* resp = nullptr) {
    pb::CreateVolumeResponse local;
    return controller_->CreateVolume(Ctx().get(), req, resp ? resp : &local);
  }
  std::string MustCreate(const std::string& name, int64_t bytes, const pb::VolumeCapability& cap = MountCap()) {
    pb::CreateVolumeResponse resp;
    auto s = Create(CreateReq(name, bytes, cap), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.volume().volume_id();
  }
  grpc::Status Delete(const std::string& id) {
    pb::DeleteVolumeRequest req;
    req.set_volume_id(id);
    pb::DeleteVolumeResponse resp;
    return controller_->DeleteVolume(Ctx().get(), req, &resp);
  }
  int64_t Capacity() {
    pb::GetCapacityResponse resp;
    auto s = controller_->GetCapacity(Ctx().get(), pb::GetCapacityRequest(), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.available_capacity();
  }
  std::string StagingPath(const std::string& id) { return kubelet_ + "/staging-" + id; }
  std::string TargetPath(const std::string& id, int n = 0) {
    std::string parent = kubelet_ + "/pod" + std::to_string(n) + "-" + id;
    mkdir(parent.c_str(), 0750);  // kubelet creates the parent
    return parent + "/mount";
  }
  grpc::Status Stage(const std::string& id, const pb::VolumeCapability& cap = MountCap(),
                     const std::string& path = "") {
    pb::NodeStageVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(path.empty() ? StagingPath(id) : path);
    *req.mutable_volume_capability() = cap;
    pb::NodeStageVolumeResponse resp;
    return node_->NodeStageVolume(Ctx().get(), req, &resp);
  }
  grpc::Status Unstage(const std::string& id, const std::string& path = "") {
    pb::NodeUnstageVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(path.empty() ? StagingPath(id) : path);
    pb::NodeUnstageVolumeResponse resp;
    return node_->NodeUnstageVolume(Ctx().get(), req, &resp);
  }
  pb::NodePublishVolumeRequest PublishReq(const std::string& id, const std::string& target,
                                          const pb::VolumeCapability& cap = MountCap()) {
    pb::NodePublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(StagingPath(id));
    req.set_target_path(target);
    *req.mutable_volume_capability() = cap;
    auto& ctx = *req.mutable_volume_context();
    ctx["csi.storage.k8s.io/pod.name"] = "app";
    ctx["csi.storage.k8s.io/pod.namespace"] = "default";
    ctx["csi.storage.k8s.io/pod.uid"] = "1234";
    ctx["csi.storage.k8s.io/serviceAccount.name"] = "default";
    ctx["csi.storage.k8s.io/ephemeral"] = "false";
    return req;
  }
  grpc::Status Publish(const pb::NodePublishVolumeRequest& req) {
    pb::NodePublishVolumeResponse resp;
    return node_->NodePublishVolume(Ctx().get(), req, &resp);
  }
  grpc::Status Unpublish(const std::string& id, const std::string& target) {
    pb::NodeUnpublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_target_path(target);
    pb::NodeUnpublishVolumeResponse resp;
    return node_->NodeUnpublishVolume(Ctx().get(), req, &resp);
  }
  std::string MountInfoDir(const std::string& target) { return plugin_->kata_root() + "/" + Base64UrlEncode(target); }
  nlohmann::json MountInfoOf(const std::string& target) {
    return nlohmann::json::parse(ReadFile(MountInfoDir(target) + "/mountInfo.json"), nullptr, false);
  }
  std::string BackingFile(const std::string& id) { return plugin_->backing_root() + "/" + id + ".img"; }

  TempDir tmp_;
  std::string kubelet_;
  std::vector<std::string> extra_;
  std::unique_ptr<PluginProcess> plugin_;
  std::unique_ptr<pb::Identity::Stub> identity_;
  std::unique_ptr<pb::Controller::Stub> controller_;
  std::unique_ptr<pb::Node::Stub> node_;
};

#define EXPECT_CODE(expr, code)                                               \
  do {                                                                        \
    grpc::Status s_ = (expr);                                                 \
    EXPECT_EQ(s_.error_code(), grpc::StatusCode::code) << s_.error_message(); \
  } while (0)

// ---------------------------------------------------------------- Identity

TEST_F(CsiConformanceTest, IdentityAnswers) {
  pb::GetPluginInfoResponse info;
  ASSERT_TRUE(identity_->GetPluginInfo(Ctx().get(), pb::GetPluginInfoRequest(), &info).ok());
  EXPECT_EQ(info.name(), "csi.cocostorage.dev");
  EXPECT_FALSE(info.vendor_version().empty());
  pb::GetPluginCapabilitiesResponse caps;
  ASSERT_TRUE(identity_->GetPluginCapabilities(Ctx().get(), pb::GetPluginCapabilitiesRequest(), &caps).ok());
  bool controller = false, topology = false;
  for (const auto& c : caps.capabilities()) {
    controller |= c.service().type() == pb::PluginCapability::Service::CONTROLLER_SERVICE;
    topology |= c.service().type() == pb::PluginCapability::Service::VOLUME_ACCESSIBILITY_CONSTRAINTS;
  }
  EXPECT_TRUE(controller);
  EXPECT_TRUE(topology);
  pb::ProbeResponse probe;
  ASSERT_TRUE(identity_->Probe(Ctx().get(), pb::ProbeRequest(), &probe).ok());
  EXPECT_TRUE(probe.ready().value());
}

TEST_F(CsiConformanceTest, CapabilitiesAndNodeInfo) {
  pb::ControllerGetCapabilitiesResponse cc;
  ASSERT_TRUE(controller_->ControllerGetCapabilities(Ctx().get(), {}, &cc).ok());
  std::set<int> ctl;
  for (const auto& c : cc.capabilities()) ctl.insert(c.rpc().type());
  EXPECT_TRUE(ctl.count(pb::ControllerServiceCapability::RPC::CREATE_DELETE_VOLUME));
  EXPECT_TRUE(ctl.count(pb::ControllerServiceCapability::RPC::GET_CAPACITY));
  EXPECT_FALSE(ctl.count(pb::ControllerServiceCapability::RPC::PUBLISH_UNPUBLISH_VOLUME));
  pb::NodeGetCapabilitiesResponse nc;
  ASSERT_TRUE(node_->NodeGetCapabilities(Ctx().get(), {}, &nc).ok());
  std::set<int> nodecaps;
  for (const auto& c : nc.capabilities()) nodecaps.insert(c.rpc().type());
  EXPECT_TRUE(nodecaps.count(pb::NodeServiceCapability::RPC::STAGE_UNSTAGE_VOLUME));
  EXPECT_TRUE(nodecaps.count(pb::NodeServiceCapability::RPC::GET_VOLUME_STATS));
  // What is advertised is accepted (AccessModesKubernetesSends...): with
  // SINGLE_NODE_MULTI_WRITER on both sides Kubernetes sends ReadWriteOnce as
  // that mode and ReadWriteOncePod as SINGLE_NODE_SINGLE_WRITER.
  EXPECT_TRUE(ctl.count(pb::ControllerServiceCapability::RPC::SINGLE_NODE_MULTI_WRITER));
  EXPECT_TRUE(nodecaps.count(pb::NodeServiceCapability::RPC::SINGLE_NODE_MULTI_WRITER));
  pb::NodeGetInfoResponse ni;
  ASSERT_TRUE(node_->NodeGetInfo(Ctx().get(), {}, &ni).ok());
  EXPECT_EQ(ni.node_id(), "node-a");
  EXPECT_EQ(ni.max_volumes_per_node(), 64);
  EXPECT_EQ(ni.accessible_topology().segments().at("topology.cocostorage.dev/node"), "node-a");
  // Methods we do not offer answer UNIMPLEMENTED.
  pb::ListVolumesResponse lv;
  EXPECT_CODE(controller_->ListVolumes(Ctx().get(), {}, &lv), UNIMPLEMENTED);
}

// ---------------------------------------------------------------- CreateVolume

TEST_F(CsiConformanceTest, CreateVolumeIsThinIdempotentAndTopologyBound) {
  auto req = CreateReq("pvc-1", 10 * kGi + 1);
  pb::CreateVolumeResponse a, b;
  ASSERT_TRUE(Create(req, &a).ok());
  EXPECT_EQ(a.volume().capacity_bytes(), 10 * kGi + kMi);  // rounded up to 1 MiB
  EXPECT_EQ(a.volume().accessible_topology(0).segments().at("topology.cocostorage.dev/node"), "node-a");
  EXPECT_EQ(a.volume().volume_context().at("keySource"), "ephemeral");
  EXPECT_EQ(a.volume().volume_context().at("fsType"), "ext4");
  struct stat st {};
  ASSERT_EQ(stat(BackingFile(a.volume().volume_id()).c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 10 * kGi + kMi);
  EXPECT_LT(st.st_blocks * 512, kMi);  // sparse
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // Same request again: same volume.
  ASSERT_TRUE(Create(req, &b).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(a, b)) << a.DebugString() << b.DebugString();
  // Incompatible re-creates.
  EXPECT_CODE(Create(CreateReq("pvc-1", 20 * kGi)), ALREADY_EXISTS);
  auto other_params = req;
  (*other_params.mutable_parameters())["integrity"] = "none";
  EXPECT_CODE(Create(other_params), ALREADY_EXISTS);
  EXPECT_CODE(Create(CreateReq("pvc-1", 10 * kGi + 1, BlockCap())), ALREADY_EXISTS);
  // Topology: ours accepted, another node's refused.
  auto topo = CreateReq("pvc-topo", kGi);
  (*topo.mutable_accessibility_requirements()->add_requisite()->mutable_segments())["topology.cocostorage.dev/node"] =
      "node-a";
  EXPECT_TRUE(Create(topo).ok());
  auto elsewhere = CreateReq("pvc-elsewhere", kGi);
  (*elsewhere.mutable_accessibility_requirements()
        ->add_requisite()
        ->mutable_segments())["topology.cocostorage.dev/node"] = "node-b";
  EXPECT_CODE(Create(elsewhere), RESOURCE_EXHAUSTED);
  // No capacity range: 1 GiB default.
  auto dflt = CreateReq("pvc-default", 0);
  dflt.clear_capacity_range();
  pb::CreateVolumeResponse d;
  ASSERT_TRUE(Create(dflt, &d).ok());
  EXPECT_EQ(d.volume().capacity_bytes(), kGi);
}

TEST_F(CsiConformanceTest, CreateVolumeRejectsInvalidRequests) {
  EXPECT_CODE(Create(CreateReq("", kGi)), INVALID_ARGUMENT);
  auto no_caps = CreateReq("v", kGi);
  no_caps.clear_volume_capabilities();
  EXPECT_CODE(Create(no_caps), INVALID_ARGUMENT);
  EXPECT_CODE(Create(CreateReq("v", kGi, MountCap(AM::MULTI_NODE_MULTI_WRITER))), INVALID_ARGUMENT);
  EXPECT_CODE(Create(CreateReq("v", kGi, MountCap(AM::MULTI_NODE_READER_ONLY))), INVALID_ARGUMENT);
  EXPECT_CODE(Create(CreateReq("v", kGi, BlockCap(AM::MULTI_NODE_SINGLE_WRITER))), INVALID_ARGUMENT);
  EXPECT_CODE(Create(CreateReq("v", kGi, MountCap(AM::UNKNOWN))), INVALID_ARGUMENT);
  EXPECT_CODE(Create(CreateReq("v", kGi, MountCap(AM::SINGLE_NODE_WRITER, "btrfs"))), INVALID_ARGUMENT);
  pb::VolumeCapability no_type;
  no_type.mutable_access_mode()->set_mode(AM::SINGLE_NODE_WRITER);
  EXPECT_CODE(Create(CreateReq("v", kGi, no_type)), INVALID_ARGUMENT);
  auto mixed = CreateReq("v", kGi);
  *mixed.add_volume_capabilities() = BlockCap();
  EXPECT_CODE(Create(mixed), INVALID_ARGUMENT);

  auto with = [&](const std::string& k, const std::string& v) {
    auto r = CreateReq("v", kGi);
    (*r.mutable_parameters())[k] = v;
    return r;
  };
  pb::CreateVolumeResponse resp;
  auto s = Create(with("encrypt", "yes"), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("encrypt"), std::string::npos) << s.error_message();
  EXPECT_CODE(Create(with("fsType", "vfat")), INVALID_ARGUMENT);
  EXPECT_CODE(Create(with("keySource", "kbs")), INVALID_ARGUMENT);  // URI missing
  auto bad_uri = with("keySource", "kbs");
  (*bad_uri.mutable_parameters())["kbsResourceUri"] = "kbs:///repo/../etc";
  EXPECT_CODE(Create(bad_uri), INVALID_ARGUMENT);
  EXPECT_CODE(Create(with("integrity", "md5")), INVALID_ARGUMENT);
  auto fs_conflict = CreateReq("v", kGi, MountCap(AM::SINGLE_NODE_WRITER, "xfs"));
  (*fs_conflict.mutable_parameters())["fsType"] = "ext4";
  EXPECT_CODE(Create(fs_conflict), INVALID_ARGUMENT);
  auto clone = CreateReq("v", kGi);
  clone.mutable_volume_content_source()->mutable_volume()->set_volume_id("cv-x");
  EXPECT_CODE(Create(clone), INVALID_ARGUMENT);
  // Capacity.
  auto neg = CreateReq("v", -1);
  EXPECT_CODE(Create(neg), INVALID_ARGUMENT);
  auto inverted = CreateReq("v", 2 * kGi);
  inverted.mutable_capacity_range()->set_limit_bytes(kGi);
  EXPECT_CODE(Create(inverted), OUT_OF_RANGE);
  EXPECT_CODE(Create(CreateReq("v", kCapacity + kMi)), OUT_OF_RANGE);
  // Nothing was created by any of these.
  EXPECT_EQ(Capacity(), kCapacity);
}

// ---------------------------------------------------------------- GetCapacity

TEST_F(CsiConformanceTest, GetCapacityIsTruthful) {
  EXPECT_EQ(Capacity(), kCapacity);
  std::string a = MustCreate("a", 30 * kGi);
  EXPECT_EQ(Capacity(), 70 * kGi);
  pb::GetCapacityResponse full;
  ASSERT_TRUE(controller_->GetCapacity(Ctx().get(), {}, &full).ok());
  EXPECT_EQ(full.maximum_volume_size().value(), 70 * kGi);
  // Exactly the reported amount can be created; one more MiB cannot.
  std::string b = MustCreate("b", 70 * kGi);
  EXPECT_EQ(Capacity(), 0);
  EXPECT_CODE(Create(CreateReq("c", kMi)), RESOURCE_EXHAUSTED);
  ASSERT_TRUE(Delete(b).ok());
  EXPECT_EQ(Capacity(), 70 * kGi);
  // Another node's topology or an unsupported capability: nothing here.
  pb::GetCapacityRequest other;
  (*other.mutable_accessible_topology()->mutable_segments())["topology.cocostorage.dev/node"] = "node-b";
  pb::GetCapacityResponse r;
  ASSERT_TRUE(controller_->GetCapacity(Ctx().get(), other, &r).ok());
  EXPECT_EQ(r.available_capacity(), 0);
  pb::GetCapacityRequest ours;
  (*ours.mutable_accessible_topology()->mutable_segments())["topology.cocostorage.dev/node"] = "node-a";
  *ours.add_volume_capabilities() = BlockCap();
  ASSERT_TRUE(controller_->GetCapacity(Ctx().get(), ours, &r).ok());
  EXPECT_EQ(r.available_capacity(), 70 * kGi);
  pb::GetCapacityRequest multi;
  *multi.add_volume_capabilities() = MountCap(AM::MULTI_NODE_MULTI_WRITER);
  ASSERT_TRUE(controller_->GetCapacity(Ctx().get(), multi, &r).ok());
  EXPECT_EQ(r.available_capacity(), 0);
  pb::GetCapacityRequest bad_params;
  (*bad_params.mutable_parameters())["bogus"] = "1";
  EXPECT_CODE(controller_->GetCapacity(Ctx().get(), bad_params, &r), INVALID_ARGUMENT);
  ASSERT_TRUE(Delete(a).ok());
  EXPECT_EQ(Capacity(), kCapacity);
}

TEST_F(CsiConformanceTest, DefaultCapacityIsBackingFreeSpace) {
  DropStubs();
  plugin_->Stop();
  StartPlugin({});
  int64_t cap = Capacity();
  EXPECT_GT(cap, 0);
  // What is reported can be created.
  pb::CreateVolumeResponse resp;
  auto req = CreateReq("all", cap / kMi * kMi);
  ASSERT_TRUE(Create(req, &resp).ok());
  EXPECT_EQ(Capacity(), cap - cap / kMi * kMi);
  ASSERT_TRUE(Delete(resp.volume().volume_id()).ok());
}

// ---------------------------------------------------------------- DeleteVolume / Validate

TEST_F(CsiConformanceTest, DeleteVolumeIsIdempotent) {
  EXPECT_CODE(Delete(""), INVALID_ARGUMENT);
  EXPECT_TRUE(Delete("cv-does-not-exist").ok());
  EXPECT_TRUE(Delete("../../etc/passwd").ok());  // cannot name one of ours
  std::string id = MustCreate("d", kGi);
  ASSERT_TRUE(Exists(BackingFile(id)));
  ASSERT_TRUE(Delete(id).ok());
  EXPECT_FALSE(Exists(BackingFile(id)));
  EXPECT_FALSE(Exists(plugin_->state_dir() + "/" + id + ".json"));
  EXPECT_TRUE(Delete(id).ok());
  // Re-create with the same name after delete is a fresh volume.
  EXPECT_EQ(MustCreate("d", kGi), id);
}

TEST_F(CsiConformanceTest, ValidateVolumeCapabilities) {
  std::string id = MustCreate("val", kGi);
  pb::ValidateVolumeCapabilitiesRequest req;
  req.set_volume_id(id);
  *req.add_volume_capabilities() = MountCap(AM::SINGLE_NODE_SINGLE_WRITER);
  pb::ValidateVolumeCapabilitiesResponse resp;
  ASSERT_TRUE(controller_->ValidateVolumeCapabilities(Ctx().get(), req, &resp).ok());
  EXPECT_TRUE(resp.has_confirmed());
  EXPECT_EQ(resp.confirmed().volume_capabilities_size(), 1);

  auto multi = req;
  *multi.mutable_volume_capabilities(0) = MountCap(AM::MULTI_NODE_READER_ONLY);
  pb::ValidateVolumeCapabilitiesResponse r2;
  ASSERT_TRUE(controller_->ValidateVolumeCapabilities(Ctx().get(), multi, &r2).ok());
  EXPECT_FALSE(r2.has_confirmed());
  EXPECT_FALSE(r2.message().empty());

  auto block = req;
  *block.mutable_volume_capabilities(0) = BlockCap();
  ASSERT_TRUE(controller_->ValidateVolumeCapabilities(Ctx().get(), block, &r2).ok());
  EXPECT_FALSE(r2.has_confirmed());

  auto params = req;
  (*params.mutable_parameters())["integrity"] = "none";
  pb::ValidateVolumeCapabilitiesResponse r3;
  ASSERT_TRUE(controller_->ValidateVolumeCapabilities(Ctx().get(), params, &r3).ok());
  EXPECT_FALSE(r3.has_confirmed());

  auto unknown = req;
  unknown.set_volume_id("cv-nope");
  EXPECT_CODE(controller_->ValidateVolumeCapabilities(Ctx().get(), unknown, &resp), NOT_FOUND);
  auto no_id = req;
  no_id.clear_volume_id();
  EXPECT_CODE(controller_->ValidateVolumeCapabilities(Ctx().get(), no_id, &resp), INVALID_ARGUMENT);
  auto no_caps = req;
  no_caps.clear_volume_capabilities();
  EXPECT_CODE(controller_->ValidateVolumeCapabilities(Ctx().get(), no_caps, &resp), INVALID_ARGUMENT);
}

// ---------------------------------------------------------------- Access modes

// Every mode Kubernetes sends for ReadWriteOnce (SINGLE_NODE_MULTI_WRITER, or
// SINGLE_NODE_WRITER from COs that ignore the capability), ReadWriteOncePod
// (SINGLE_NODE_SINGLE_WRITER) and a read-only single-node claim is served end
// to end, in block and in filesystem mode.
TEST_F(CsiConformanceTest, SingleNodeAccessModesAreServedEndToEnd) {
  int n = 0;
  for (auto mode : {AM::SINGLE_NODE_MULTI_WRITER, AM::SINGLE_NODE_SINGLE_WRITER, AM::SINGLE_NODE_WRITER,
                    AM::SINGLE_NODE_READER_ONLY}) {
    for (bool block : {false, true}) {
      SCOPED_TRACE(std::string(AM::Mode_Name(mode)) + (block ? " block" : " mount"));
      const pb::VolumeCapability cap = block ? BlockCap(mode) : MountCap(mode);
      pb::GetCapacityRequest creq;
      *creq.add_volume_capabilities() = cap;
      pb::GetCapacityResponse cresp;
      ASSERT_TRUE(controller_->GetCapacity(Ctx().get(), creq, &cresp).ok());
      EXPECT_GT(cresp.available_capacity(), 0);
      const std::string id = MustCreate("am-" + std::to_string(n++), kGi, cap);
      ASSERT_FALSE(id.empty());
      pb::ValidateVolumeCapabilitiesRequest vreq;
      vreq.set_volume_id(id);
      *vreq.add_volume_capabilities() = cap;
      pb::ValidateVolumeCapabilitiesResponse vresp;
      ASSERT_TRUE(controller_->ValidateVolumeCapabilities(Ctx().get(), vreq, &vresp).ok());
      EXPECT_TRUE(vresp.has_confirmed()) << vresp.message();
      ASSERT_TRUE(Stage(id, cap).ok());
      const std::string target = TargetPath(id);
      auto s = Publish(PublishReq(id, target, cap));
      ASSERT_TRUE(s.ok()) << s.error_message();
      EXPECT_TRUE(Exists(MountInfoDir(target) + "/mountInfo.json"));
      EXPECT_TRUE(Unpublish(id, target).ok());
      EXPECT_TRUE(Unstage(id).ok());
      EXPECT_TRUE(Delete(id).ok());
    }
  }
}

// ReadOnlyMany / ReadWriteMany arrive as multi-node modes: one direct-assigned
// device is hot-plugged into one VM, so they are refused with the code each
// RPC's error table names, and never advertised as available.
TEST_F(CsiConformanceTest, MultiNodeAccessModesAreRefusedWithTheSpecCodes) {
  const std::string fs_id = MustCreate("mn-fs", kGi);
  const std::string blk_id = MustCreate("mn-blk", kGi, BlockCap());
  for (auto mode : {AM::MULTI_NODE_READER_ONLY, AM::MULTI_NODE_SINGLE_WRITER, AM::MULTI_NODE_MULTI_WRITER}) {
    for (bool block : {false, true}) {
      SCOPED_TRACE(std::string(AM::Mode_Name(mode)) + (block ? " block" : " mount"));
      const pb::VolumeCapability cap = block ? BlockCap(mode) : MountCap(mode);
      const std::string& id = block ? blk_id : fs_id;
      // CreateVolume: an unsupported field value is INVALID_ARGUMENT.
      EXPECT_CODE(Create(CreateReq("mn-new", kGi, cap)), INVALID_ARGUMENT);
      pb::GetCapacityRequest creq;
      *creq.add_volume_capabilities() = cap;
      pb::GetCapacityResponse cresp;
      ASSERT_TRUE(controller_->GetCapacity(Ctx().get(), creq, &cresp).ok());
      EXPECT_EQ(cresp.available_capacity(), 0);
      pb::ValidateVolumeCapabilitiesRequest vreq;
      vreq.set_volume_id(id);
      *vreq.add_volume_capabilities() = cap;
      pb::ValidateVolumeCapabilitiesResponse vresp;
      ASSERT_TRUE(controller_->ValidateVolumeCapabilities(Ctx().get(), vreq, &vresp).ok());
      EXPECT_FALSE(vresp.has_confirmed());
      // NodeStage / NodePublish: "exceeds capabilities" is FAILED_PRECONDITION.
      EXPECT_CODE(Stage(id, cap), FAILED_PRECONDITION);
      ASSERT_TRUE(Stage(id, block ? BlockCap() : MountCap()).ok());
      EXPECT_CODE(Publish(PublishReq(id, TargetPath(id), cap)), FAILED_PRECONDITION);
      EXPECT_FALSE(Exists(MountInfoDir(TargetPath(id)) + "/mountInfo.json"));
      ASSERT_TRUE(Unstage(id).ok());
    }
  }
  EXPECT_EQ(Capacity(), kCapacity - 2 * kGi);  // no "mn-new" volume was made
}

// ReadWriteOnce lets two pods on one node share a claim, but one device
// belongs to one VM: the second pod's publication is refused (its kubelet
// retries until the first pod is gone) and the first one is untouched.
TEST_F(CsiConformanceTest, SecondWriterOnTheSameNodeIsRefused) {
  const auto cap = MountCap(AM::SINGLE_NODE_MULTI_WRITER);
  const std::string id = MustCreate("rwo", kGi, cap);
  ASSERT_TRUE(Stage(id, cap).ok());
  const std::string first = TargetPath(id, 0), second = TargetPath(id, 1);
  ASSERT_TRUE(Publish(PublishReq(id, first, cap)).ok());
  EXPECT_CODE(Publish(PublishReq(id, second, cap)), FAILED_PRECONDITION);
  EXPECT_FALSE(Exists(second));
  EXPECT_FALSE(Exists(MountInfoDir(second)));
  EXPECT_EQ(MountInfoOf(first)["metadata"]["cocostorage.dev/volumeId"], id);
  ASSERT_TRUE(Unpublish(id, first).ok());
  EXPECT_TRUE(Publish(PublishReq(id, second, cap)).ok());  // once the first pod is gone
  ASSERT_TRUE(Unpublish(id, second).ok());
}

// ---------------------------------------------------------------- Hostile input

// Neither answers nor the plugin's log echo unbounded request input.
TEST_F(CsiConformanceTest, HugeInputIsNotEchoedUnbounded) {
  const std::string huge(100000, 'x');
  std::vector<grpc::Status> answers;
  answers.push_back(Publish(PublishReq("cv-" + huge, TargetPath("h"))));
  answers.push_back(Stage("cv-" + huge, MountCap(), kubelet_ + "/" + huge));
  answers.push_back(Stage("cv-x", MountCap(), kubelet_ + "/a/./" + std::string(3000, 'y')));
  auto params = CreateReq("huge", kGi);
  (*params.mutable_parameters())[huge] = huge;
  answers.push_back(Create(params));
  auto name = CreateReq(std::string(1000, 'n'), kGi);
  (*name.mutable_parameters())["integrity"] = huge;
  answers.push_back(Create(name));
  // Not an id of ours, so not published there: OK, but logged with its id.
  EXPECT_TRUE(Unpublish("cv-" + huge, TargetPath("h")).ok());
  for (const auto& a : answers) {
    EXPECT_FALSE(a.ok());
    EXPECT_LE(a.error_message().size(), 512u) << a.error_message().substr(0, 80);
  }
  std::istringstream log(ReadFile(plugin_->log_path()));
  int lines = 0;
  for (std::string line; std::getline(log, line); ++lines) {
    EXPECT_LE(line.size(), 1024u) << line.substr(0, 120);
  }
  EXPECT_GT(lines, 0);
}

// ---------------------------------------------------------------- Kubelet root

// Request paths must lie below --kubelet-root (INVALID_ARGUMENT otherwise),
// and nothing is created outside it.
TEST_F(CsiConformanceTest, RequestPathsOutsideTheKubeletRootAreRefused) {
  const std::string id = MustCreate("outside", kGi);
  const std::string outside = tmp_.path() + "/outside";
  ASSERT_EQ(mkdir(outside.c_str(), 0750), 0);
  const std::string sibling = kubelet_ + "-evil";  // a prefix, not a parent
  ASSERT_EQ(mkdir(sibling.c_str(), 0750), 0);
  EXPECT_CODE(Stage(id, MountCap(), outside + "/staging"), INVALID_ARGUMENT);
  EXPECT_CODE(Stage(id, MountCap(), kubelet_), INVALID_ARGUMENT);  // the root itself
  ASSERT_TRUE(Stage(id).ok());
  EXPECT_CODE(Publish(PublishReq(id, outside + "/mount")), INVALID_ARGUMENT);
  EXPECT_CODE(Publish(PublishReq(id, sibling + "/mount")), INVALID_ARGUMENT);
  auto outside_staging = PublishReq(id, TargetPath(id));
  outside_staging.set_staging_target_path(outside + "/staging");
  EXPECT_CODE(Publish(outside_staging), INVALID_ARGUMENT);
  EXPECT_FALSE(Exists(outside + "/mount"));
  EXPECT_FALSE(Exists(sibling + "/mount"));
  EXPECT_CODE(Unpublish(id, outside + "/mount"), INVALID_ARGUMENT);
  EXPECT_CODE(Unstage(id, outside + "/staging"), INVALID_ARGUMENT);
  ASSERT_TRUE(Unstage(id).ok());
}

// A symlink anywhere below the kubelet root is never followed: publishing
// through one is refused and creates nothing where it points; a parent that
// is swapped for a symlink after publication makes unpublish refuse rather
// than remove what the link points at.
TEST_F(CsiConformanceTest, SymlinkedParentsBelowTheKubeletRootAreNeverFollowed) {
  const std::string id = MustCreate("symlinked", kGi);
  ASSERT_TRUE(Stage(id).ok());
  const std::string elsewhere = tmp_.path() + "/elsewhere";
  ASSERT_EQ(mkdir(elsewhere.c_str(), 0750), 0);
  ASSERT_EQ(mkdir((elsewhere + "/deep").c_str(), 0750), 0);
  // Direct parent, and a link higher up the path.
  ASSERT_EQ(symlink(elsewhere.c_str(), (kubelet_ + "/pods-link").c_str()), 0);
  ASSERT_EQ(mkdir((kubelet_ + "/pods").c_str(), 0750), 0);
  ASSERT_EQ(symlink(elsewhere.c_str(), (kubelet_ + "/pods/uid-link").c_str()), 0);
  for (const std::string& target : {kubelet_ + "/pods-link/mount", kubelet_ + "/pods/uid-link/deep/mount"}) {
    SCOPED_TRACE(target);
    EXPECT_CODE(Publish(PublishReq(id, target)), FAILED_PRECONDITION);
    EXPECT_FALSE(Exists(MountInfoDir(target)));
  }
  EXPECT_FALSE(Exists(elsewhere + "/mount"));
  EXPECT_FALSE(Exists(elsewhere + "/deep/mount"));

  // Swap a published target's parent for a link to a directory holding an
  // empty "mount": unpublish must not rmdir it.
  const std::string target = TargetPath(id, 3);
  ASSERT_TRUE(Publish(PublishReq(id, target)).ok());
  const std::string parent = target.substr(0, target.rfind('/'));
  ASSERT_EQ(rename(parent.c_str(), (parent + ".real").c_str()), 0);
  ASSERT_EQ(mkdir((elsewhere + "/mount").c_str(), 0750), 0);
  ASSERT_EQ(symlink(elsewhere.c_str(), parent.c_str()), 0);
  EXPECT_CODE(Unpublish(id, target), FAILED_PRECONDITION);
  EXPECT_TRUE(Exists(elsewhere + "/mount"));
  // Put kubelet's directory back: the retry finishes the job.
  ASSERT_EQ(unlink(parent.c_str()), 0);
  ASSERT_EQ(rename((parent + ".real").c_str(), parent.c_str()), 0);
  EXPECT_TRUE(Unpublish(id, target).ok());
  EXPECT_FALSE(Exists(target));
  ASSERT_TRUE(Unstage(id).ok());
}

// ---------------------------------------------------------------- Error table rows

// What a pod outside a Kata VM gets. runc ignores mountInfo.json and
// bind-mounts the host-side target into the container; the plugin sealed that
// directory (immutable attribute), so the container's root can neither create
// nor write anything there: the write fails (EPERM) instead of landing on the
// host in the clear. The block-mode target is an empty file: a loop device over
// it has no byte to write.
TEST_F(CsiConformanceTest, ANonKataPodCannotWriteThroughThePublishedTarget) {
  const std::string id = MustCreate("runc", kGi);
  ASSERT_TRUE(Stage(id).ok());
  const std::string target = TargetPath(id);
  ASSERT_TRUE(Publish(PublishReq(id, target)).ok());
  EXPECT_TRUE(IsImmutable(target));
  errno = 0;
  int fd = open((target + "/plaintext").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(errno, EPERM);
  if (fd >= 0) close(fd);
  EXPECT_NE(mkdir((target + "/d").c_str(), 0700), 0);
  // A publish retry keeps it sealed; unpublish unseals and removes it.
  ASSERT_TRUE(Publish(PublishReq(id, target)).ok());
  EXPECT_TRUE(IsImmutable(target));
  ASSERT_TRUE(Unpublish(id, target).ok());
  EXPECT_FALSE(Exists(target));
  ASSERT_TRUE(Unstage(id).ok());

  const std::string bid = MustCreate("runc-blk", kGi, BlockCap());
  ASSERT_TRUE(Stage(bid, BlockCap()).ok());
  const std::string btarget = TargetPath(bid);
  ASSERT_TRUE(Publish(PublishReq(bid, btarget, BlockCap())).ok());
  struct stat st {};
  ASSERT_EQ(stat(btarget.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_size, 0);
  ASSERT_TRUE(Unpublish(bid, btarget).ok());
  ASSERT_TRUE(Unstage(bid).ok());
}

// NodeUnpublishVolume removes the target it created, and says so when it
// cannot: files someone else put into the target are never deleted, the call
// fails (FAILED_PRECONDITION) and the publication stays recorded until a retry
// succeeds.
TEST_F(CsiConformanceTest, UnpublishRemovesItsTargetOrFailsTruthfully) {
  const std::string id = MustCreate("unpub", kGi);
  ASSERT_TRUE(Stage(id).ok());
  const std::string target = TargetPath(id);
  ASSERT_TRUE(Publish(PublishReq(id, target)).ok());
  ASSERT_TRUE(Exists(target));
  const std::string foreign = target + "/not-ours";
  // Sealed: nobody (root included) adds anything; an operator unseals it.
  ASSERT_TRUE(IsImmutable(target));
  ASSERT_TRUE(SetImmutable(target, false));
  { std::ofstream(foreign) << "data"; }
  ASSERT_TRUE(SetImmutable(target, true));
  EXPECT_CODE(Unpublish(id, target), FAILED_PRECONDITION);
  EXPECT_EQ(ReadFile(foreign), "data");
  EXPECT_FALSE(Exists(MountInfoDir(target)));     // the runtime no longer sees the volume
  EXPECT_CODE(Unstage(id), FAILED_PRECONDITION);  // still published at target
  ASSERT_EQ(unlink(foreign.c_str()), 0);
  EXPECT_TRUE(Unpublish(id, target).ok());
  EXPECT_FALSE(Exists(target));
  EXPECT_TRUE(Unstage(id).ok());

  // Block mode: a target file that gained bytes is not ours either.
  const std::string bid = MustCreate("unpub-blk", kGi, BlockCap());
  ASSERT_TRUE(Stage(bid, BlockCap()).ok());
  const std::string btarget = TargetPath(bid);
  ASSERT_TRUE(Publish(PublishReq(bid, btarget, BlockCap())).ok());
  { std::ofstream(btarget) << "x"; }
  EXPECT_CODE(Unpublish(bid, btarget), FAILED_PRECONDITION);
  EXPECT_TRUE(Exists(btarget));
  ASSERT_EQ(truncate(btarget.c_str(), 0), 0);
  EXPECT_TRUE(Unpublish(bid, btarget).ok());
  EXPECT_FALSE(Exists(btarget));
}

// NodeStageVolume "exceeds capabilities": a block capability for a
// filesystem volume, the reverse, or another fs type.
TEST_F(CsiConformanceTest, NodeStageUnsupportedCapabilityIsFailedPrecondition) {
  const std::string fs_id = MustCreate("st-fs", kGi);
  const std::string blk_id = MustCreate("st-blk", kGi, BlockCap());
  EXPECT_CODE(Stage(fs_id, BlockCap()), FAILED_PRECONDITION);
  EXPECT_CODE(Stage(blk_id, MountCap()), FAILED_PRECONDITION);
  EXPECT_CODE(Stage(fs_id, MountCap(AM::SINGLE_NODE_WRITER, "xfs")), FAILED_PRECONDITION);
  EXPECT_TRUE(Stage(fs_id, MountCap(AM::SINGLE_NODE_WRITER, "ext4")).ok());
  // Nothing was recorded by the refused ones: unstaged, deletable.
  ASSERT_TRUE(Unstage(fs_id).ok());
  EXPECT_TRUE(Delete(fs_id).ok());
  EXPECT_TRUE(Delete(blk_id).ok());
}

// NodePublishVolume "exceeds capabilities".
TEST_F(CsiConformanceTest, NodePublishUnsupportedCapabilityIsFailedPrecondition) {
  const std::string id = MustCreate("pu-fs", kGi);
  ASSERT_TRUE(Stage(id).ok());
  const std::string target = TargetPath(id);
  EXPECT_CODE(Publish(PublishReq(id, target, BlockCap())), FAILED_PRECONDITION);
  EXPECT_CODE(Publish(PublishReq(id, target, MountCap(AM::SINGLE_NODE_WRITER, "xfs"))), FAILED_PRECONDITION);
  EXPECT_FALSE(Exists(target));
  EXPECT_TRUE(Publish(PublishReq(id, target, MountCap(AM::SINGLE_NODE_WRITER, "ext4"))).ok());
  ASSERT_TRUE(Unpublish(id, target).ok());
}

// NodeGetVolumeStats "volume does not exist" / "volume path does not exist":
// the volume is judged first, and a path in any form that is not one of its
// paths is NOT_FOUND.
TEST_F(CsiConformanceTest, NodeGetVolumeStatsUnknownVolumeOrPathIsNotFound) {
  const std::string id = MustCreate("stats", kGi);
  ASSERT_TRUE(Stage(id).ok());
  const std::string target = TargetPath(id);
  ASSERT_TRUE(Publish(PublishReq(id, target)).ok());
  auto stats = [&](const std::string& vid, const std::string& path) {
    pb::NodeGetVolumeStatsRequest req;
    req.set_volume_id(vid);
    req.set_volume_path(path);
    pb::NodeGetVolumeStatsResponse resp;
    return node_->NodeGetVolumeStats(Ctx().get(), req, &resp);
  };
  EXPECT_TRUE(stats(id, target).ok());
  EXPECT_CODE(stats("cv-unknown", "not/normalised/../path"), NOT_FOUND);
  EXPECT_CODE(stats("cv-unknown", target), NOT_FOUND);
  EXPECT_CODE(stats(id, target + "/"), NOT_FOUND);
  EXPECT_CODE(stats(id, "relative"), NOT_FOUND);
  EXPECT_CODE(stats(id, kubelet_ + "/elsewhere"), NOT_FOUND);
  EXPECT_CODE(stats(id, ""), INVALID_ARGUMENT);
  EXPECT_CODE(stats("", target), INVALID_ARGUMENT);
  ASSERT_TRUE(Unpublish(id, target).ok());
}

// NodeExpandVolume rows: unknown volume / path NOT_FOUND (volume first),
// "exceeds capabilities" INVALID_ARGUMENT.
TEST_F(CsiConformanceTest, NodeExpandVolumeErrorRows) {
  const std::string id = MustCreate("nexp", kGi);
  ASSERT_TRUE(Stage(id).ok());
  const std::string target = TargetPath(id);
  ASSERT_TRUE(Publish(PublishReq(id, target)).ok());
  auto expand = [&](const std::string& vid, const std::string& path, const pb::VolumeCapability* cap,
                    pb::NodeExpandVolumeResponse* resp) {
    pb::NodeExpandVolumeRequest req;
    req.set_volume_id(vid);
    req.set_volume_path(path);
    if (cap) *req.mutable_volume_capability() = *cap;
    return node_->NodeExpandVolume(Ctx().get(), req, resp);
  };
  pb::NodeExpandVolumeResponse resp;
  EXPECT_CODE(expand("cv-unknown", "not/normalised/../path", nullptr, &resp), NOT_FOUND);
  EXPECT_CODE(expand(id, target + "/", nullptr, &resp), NOT_FOUND);
  EXPECT_CODE(expand(id, kubelet_ + "/elsewhere", nullptr, &resp), NOT_FOUND);
  const auto block = BlockCap();
  EXPECT_CODE(expand(id, target, &block, &resp), INVALID_ARGUMENT);
  const auto multi = MountCap(AM::MULTI_NODE_MULTI_WRITER);
  EXPECT_CODE(expand(id, target, &multi, &resp), INVALID_ARGUMENT);
  ASSERT_TRUE(expand(id, target, nullptr, &resp).ok());
  EXPECT_EQ(resp.capacity_bytes(), kGi);
  ASSERT_TRUE(Unpublish(id, target).ok());
}

// CreateVolume "volume already exists but is incompatible": a retry whose
// requisite topology excludes the node the volume lives on.
TEST_F(CsiConformanceTest, CreateVolumeRetryOutsideItsTopologyIsAlreadyExists) {
  ASSERT_FALSE(MustCreate("pvc-topo-retry", kGi).empty());
  auto elsewhere = CreateReq("pvc-topo-retry", kGi);
  (*elsewhere.mutable_accessibility_requirements()
        ->add_requisite()
        ->mutable_segments())["topology.cocostorage.dev/node"] = "node-b";
  EXPECT_CODE(Create(elsewhere), ALREADY_EXISTS);
  EXPECT_EQ(Capacity(), kCapacity - kGi);
}

// ControllerExpandVolume "exceeds capabilities" is INVALID_ARGUMENT.
TEST_F(CsiConformanceTest, ControllerExpandUnsupportedCapabilityIsInvalidArgument) {
  const std::string id = MustCreate("cexp-cap", kGi);
  pb::ControllerExpandVolumeRequest req;
  req.set_volume_id(id);
  req.mutable_capacity_range()->set_required_bytes(2 * kGi);
  *req.mutable_volume_capability() = BlockCap();
  pb::ControllerExpandVolumeResponse resp;
  EXPECT_CODE(controller_->ControllerExpandVolume(Ctx().get(), req, &resp), INVALID_ARGUMENT);
  *req.mutable_volume_capability() = MountCap(AM::MULTI_NODE_READER_ONLY);
  EXPECT_CODE(controller_->ControllerExpandVolume(Ctx().get(), req, &resp), INVALID_ARGUMENT);
  EXPECT_EQ(Capacity(), kCapacity - kGi);  // not grown
}

// ---------------------------------------------------------------- Node life cycle

TEST_F(CsiConformanceTest, FilesystemLifecycleWritesKataMountInfo) {
  auto req = CreateReq("pvc-kbs", 2 * kGi);
  (*req.mutable_parameters())["keySource"] = "kbs";
  (*req.mutable_parameters())["kbsResourceUri"] = "kbs:///default/disk/pvc-kbs";
  (*req.mutable_parameters())["fsType"] = "xfs";
  (*req.mutable_parameters())["mkfsOptions"] = "-m crc=1";
  (*req.mutable_secrets())["passphrase"] = "hunter2-secret";  // must never be persisted anywhere
  pb::CreateVolumeResponse created;
  ASSERT_TRUE(Create(req, &created).ok());
  const std::string id = created.volume().volume_id();

  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Stage(id).ok());  // repeated
  EXPECT_CODE(Stage(id, MountCap(AM::SINGLE_NODE_READER_ONLY)), ALREADY_EXISTS);
  EXPECT_CODE(Stage(id, BlockCap()), FAILED_PRECONDITION);  // created for filesystem access
  EXPECT_CODE(Stage(id, MountCap(), kubelet_ + "/elsewhere"), FAILED_PRECONDITION);

  const std::string target = TargetPath(id);
  auto pub = PublishReq(id, target);
  pub.mutable_volume_capability()->mutable_mount()->set_volume_mount_group("2000");
  pub.mutable_volume_capability()->mutable_mount()->add_mount_flags("noatime");
  (*pub.mutable_secrets())["token"] = "hunter2-secret";
  ASSERT_TRUE(Publish(pub).ok());
  EXPECT_TRUE(Publish(pub).ok());  // repeated: same success
  for (const std::string& f :
       {MountInfoDir(target) + "/mountInfo.json", plugin_->state_dir() + "/" + id + ".json", plugin_->log_path()}) {
    EXPECT_EQ(ReadFile(f).find("hunter2"), std::string::npos) << f;
  }

  // The target exists as kubelet expects, nothing is mounted on it.
  EXPECT_EQ(Mode(target) & 0777, 0750u);
  const std::string dir = MountInfoDir(target);
  EXPECT_EQ(Mode(dir), 0700u);
  EXPECT_EQ(Mode(dir + "/mountInfo.json"), 0600u);
  nlohmann::json mi = MountInfoOf(target);
  ASSERT_FALSE(mi.is_discarded());
  EXPECT_EQ(mi["volume-type"], "blk");
  EXPECT_EQ(mi["device"], BackingFile(id));
  EXPECT_EQ(mi["fstype"], "xfs");
  EXPECT_EQ(mi["options"], nlohmann::json::array({"noatime"}));
  // kata-agent hands a storage to the guest's CDH slot only for
  // encryption_key=ephemeral + create_filesystem (anything else it mounts in
  // plaintext): the KBS resource travels as a hint.
  nlohmann::json want = {{"encryptionKey", "ephemeral"},
                         {"createFilesystem", "true"},
                         {"fsGroup", "2000"},
                         {"cocostorage.dev/kind", "persistent"},
                         {"cocostorage.dev/kbsResourceUri", "kbs:///default/disk/pvc-kbs"},
                         {"cocostorage.dev/integrity", "hmac-sha256"},
                         {"cocostorage.dev/volumeMode", "filesystem"},
                         {"cocostorage.dev/volumeId", id},
                         {"cocostorage.dev/mkfsOptions", "-m crc=1"}};
  EXPECT_EQ(mi["metadata"], want);

  // Incompatible re-publish and a second pod.
  auto ro = pub;
  ro.set_readonly(true);
  EXPECT_CODE(Publish(ro), ALREADY_EXISTS);
  EXPECT_CODE(Publish(PublishReq(id, TargetPath(id, 1))), FAILED_PRECONDITION);

  // Stats at the target and the staging path; in use: no delete, no unstage.
  pb::NodeGetVolumeStatsRequest sreq;
  sreq.set_volume_id(id);
  sreq.set_volume_path(target);
  pb::NodeGetVolumeStatsResponse stats;
  ASSERT_TRUE(node_->NodeGetVolumeStats(Ctx().get(), sreq, &stats).ok());
  ASSERT_EQ(stats.usage_size(), 1);
  EXPECT_EQ(stats.usage(0).unit(), pb::VolumeUsage::BYTES);
  EXPECT_EQ(stats.usage(0).total(), 2 * kGi);
  EXPECT_EQ(stats.usage(0).used() + stats.usage(0).available(), 2 * kGi);
  EXPECT_FALSE(stats.volume_condition().abnormal());
  EXPECT_CODE(Delete(id), FAILED_PRECONDITION);
  EXPECT_CODE(Unstage(id), FAILED_PRECONDITION);

  // Kata drops a sandbox marker beside the descriptor; unpublish removes all.
  { std::ofstream(dir + "/sandbox-abc"); }
  ASSERT_TRUE(Unpublish(id, target).ok());
  EXPECT_FALSE(Exists(dir));
  EXPECT_FALSE(Exists(target));
  EXPECT_TRUE(Unpublish(id, target).ok());  // repeated
  EXPECT_CODE(node_->NodeGetVolumeStats(Ctx().get(), sreq, &stats), NOT_FOUND);

  // Second pod on the same KBS volume: the same hints (the guest opens the
  // volume it finds a header for; it never reformats it).
  const std::string target2 = TargetPath(id, 2);
  ASSERT_TRUE(Publish(PublishReq(id, target2)).ok());
  EXPECT_EQ(MountInfoOf(target2)["metadata"]["encryptionKey"], "ephemeral");
  EXPECT_EQ(MountInfoOf(target2)["metadata"]["createFilesystem"], "true");
  EXPECT_EQ(MountInfoOf(target2)["metadata"]["cocostorage.dev/kbsResourceUri"], "kbs:///default/disk/pvc-kbs");
  EXPECT_EQ(MountInfoOf(target2)["metadata"].count("fsGroup"), 0u);
  ASSERT_TRUE(Unpublish(id, target2).ok());

  ASSERT_TRUE(Unstage(id).ok());
  ASSERT_TRUE(Unstage(id).ok());  // repeated
  ASSERT_TRUE(Delete(id).ok());
  EXPECT_FALSE(Exists(BackingFile(id)));
  EXPECT_EQ(Capacity(), kCapacity);
}

// A kbsResourceUri template gives every volume of a class its own KBS key:
// CreateVolume resolves it from the PVC/PV metadata the external-provisioner
// passes with --extra-create-metadata, and only the concrete URI goes on (the
// volume context, the record, mountInfo.json).
TEST_F(CsiConformanceTest, KbsUriTemplateResolvesToOneKeyPerVolume) {
  constexpr char kTemplate[] = "kbs:///${pvc.namespace}/volume-keys/${pvc.name}";
  auto kbs_req = [&](const std::string& name, const std::string& ns, const std::string& pvc) {
    auto req = CreateReq(name, kGi);
    auto& p = *req.mutable_parameters();
    p["keySource"] = "kbs";
    p["kbsResourceUri"] = kTemplate;
    p["csi.storage.k8s.io/pvc/namespace"] = ns;
    p["csi.storage.k8s.io/pvc/name"] = pvc;
    p["csi.storage.k8s.io/pv/name"] = name;
    return req;
  };
  const auto req = kbs_req("pvc-0b1c2d3e", "team-a", "data-db-0");
  pb::CreateVolumeResponse created;
  auto s = Create(req, &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string id = created.volume().volume_id();
  const std::string uri = "kbs:///team-a/volume-keys/data-db-0";
  EXPECT_EQ(created.volume().volume_context().at("kbsResourceUri"), uri);
  EXPECT_EQ(created.volume().volume_context().at("keySource"), "kbs");
  for (const auto& [k, v] : created.volume().volume_context()) {
    EXPECT_EQ(v.find('$'), std::string::npos) << k << "=" << v;
    EXPECT_NE(k.rfind("csi.storage.k8s.io/", 0), 0u) << "metadata is not echoed into the context: " << k;
  }

  // A retry resolves to the same URI: same volume, same context.
  pb::CreateVolumeResponse again;
  ASSERT_TRUE(Create(req, &again).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(again.volume(), created.volume()));
  // The same name resolving to another URI is another key: ALREADY_EXISTS.
  auto other_claim = kbs_req("pvc-0b1c2d3e", "team-a", "data-db-1");
  s = Create(other_claim);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  EXPECT_NE(s.error_message().find(uri), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("kbs:///team-a/volume-keys/data-db-1"), std::string::npos) << s.error_message();
  auto fixed = req;  // the template's result spelled out is the same request
  (*fixed.mutable_parameters())["kbsResourceUri"] = uri;
  EXPECT_TRUE(Create(fixed).ok());

  // Another claim of the class: another key.
  pb::CreateVolumeResponse second;
  ASSERT_TRUE(Create(kbs_req("pvc-99", "team-b", "data-db-0"), &second).ok());
  EXPECT_EQ(second.volume().volume_context().at("kbsResourceUri"), "kbs:///team-b/volume-keys/data-db-0");
  ASSERT_TRUE(Delete(second.volume().volume_id()).ok());

  // Refused before anything is made.
  const int64_t before = Capacity();
  auto no_meta = CreateReq("pvc-nometa", kGi);
  (*no_meta.mutable_parameters())["keySource"] = "kbs";
  (*no_meta.mutable_parameters())["kbsResourceUri"] = kTemplate;
  no_meta.mutable_parameters()->erase("csi.storage.k8s.io/pvc/name");
  s = Create(no_meta);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("csi.storage.k8s.io/pvc/namespace"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("csi.storage.k8s.io/pvc/name"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("--extra-create-metadata"), std::string::npos) << s.error_message();
  for (const std::string& hostile :
       std::vector<std::string>{"../../etc", "a/b", "..", "Data", "x${pv.name}", std::string(254, 'a')}) {
    s = Create(kbs_req("pvc-hostile", "team-a", hostile));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << hostile;
  }
  const std::string label(50, 'a');  // a valid 152-character name, but a 152-character segment
  s = Create(kbs_req("pvc-long", "team-a", label + "." + label + "." + label));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("longer than 128"), std::string::npos) << s.error_message();
  for (const char* bad_template : {"kbs:///${pvc.namespace}/keys/${pvc.uid}", "kbs:///${pvc.namespace}/keys/${pvc.name",
                                   "kbs:///$/keys/x", "kbs:///${pvc.namespace}/${pvc.name}"}) {
    auto bad = req;
    (*bad.mutable_parameters())["kbsResourceUri"] = bad_template;
    EXPECT_CODE(Create(bad), INVALID_ARGUMENT);
  }
  EXPECT_EQ(Capacity(), before);
  EXPECT_FALSE(Exists(BackingFile(VolumeIdForName("pvc-nometa"))));
  EXPECT_FALSE(Exists(BackingFile(VolumeIdForName("pvc-hostile"))));

  // GetCapacity gets the class's parameters without claim metadata.
  pb::GetCapacityRequest cap_req;
  (*cap_req.mutable_parameters())["keySource"] = "kbs";
  (*cap_req.mutable_parameters())["kbsResourceUri"] = kTemplate;
  pb::GetCapacityResponse cap_resp;
  s = controller_->GetCapacity(Ctx().get(), cap_req, &cap_resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(cap_resp.available_capacity(), before);

  // ValidateVolumeCapabilities resolves the same way.
  pb::ValidateVolumeCapabilitiesRequest vreq;
  vreq.set_volume_id(id);
  *vreq.add_volume_capabilities() = MountCap();
  *vreq.mutable_parameters() = req.parameters();
  pb::ValidateVolumeCapabilitiesResponse vresp;
  ASSERT_TRUE(controller_->ValidateVolumeCapabilities(Ctx().get(), vreq, &vresp).ok());
  EXPECT_TRUE(vresp.has_confirmed()) << vresp.message();
  *vreq.mutable_parameters() = other_claim.parameters();
  pb::ValidateVolumeCapabilitiesResponse vresp2;
  ASSERT_TRUE(controller_->ValidateVolumeCapabilities(Ctx().get(), vreq, &vresp2).ok());
  EXPECT_FALSE(vresp2.has_confirmed());

  // The node sees the concrete URI: what kubelet passes on is the context.
  ASSERT_TRUE(Stage(id).ok());
  const std::string target = TargetPath(id);
  auto pub = PublishReq(id, target);
  for (const auto& [k, v] : created.volume().volume_context()) (*pub.mutable_volume_context())[k] = v;
  ASSERT_TRUE(Publish(pub).ok());
  auto mi = MountInfoOf(target);
  ASSERT_FALSE(mi.is_discarded());
  EXPECT_EQ(mi["metadata"]["cocostorage.dev/kbsResourceUri"], uri);
  EXPECT_EQ(mi["metadata"]["cocostorage.dev/kind"], "persistent");
  EXPECT_EQ(mi["metadata"]["encryptionKey"], "ephemeral");
  EXPECT_EQ(mi["metadata"]["createFilesystem"], "true");
  const std::string descriptor = ReadFile(MountInfoDir(target) + "/mountInfo.json");
  const std::string record = ReadFile(plugin_->state_dir() + "/" + id + ".json");
  EXPECT_EQ(descriptor.find("${"), std::string::npos) << descriptor;
  EXPECT_EQ(record.find("${"), std::string::npos) << record;
  EXPECT_NE(record.find(uri), std::string::npos) << record;

  // After a restart the record still carries it, and a retried publish
  // writes the identical descriptor.
  RestartPlugin();
  ASSERT_TRUE(Publish(pub).ok());
  EXPECT_EQ(ReadFile(MountInfoDir(target) + "/mountInfo.json"), descriptor);
  pb::CreateVolumeResponse after_restart;
  ASSERT_TRUE(Create(req, &after_restart).ok());
  EXPECT_EQ(after_restart.volume().volume_context().at("kbsResourceUri"), uri);
  EXPECT_CODE(Create(other_claim), ALREADY_EXISTS);

  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
  ASSERT_TRUE(Delete(id).ok());
  EXPECT_EQ(Capacity(), kCapacity);

  // Inline volumes have no claim: a template there is INVALID_ARGUMENT.
  const std::string inline_id = "csi-00112233445566778899aabbccddeeff";
  const std::string inline_target = TargetPath(inline_id);
  pb::NodePublishVolumeRequest inline_req;
  inline_req.set_volume_id(inline_id);
  inline_req.set_target_path(inline_target);
  *inline_req.mutable_volume_capability() = MountCap();
  (*inline_req.mutable_volume_context())["csi.storage.k8s.io/ephemeral"] = "true";
  (*inline_req.mutable_volume_context())["keySource"] = "kbs";
  (*inline_req.mutable_volume_context())["kbsResourceUri"] = kTemplate;
  s = Publish(inline_req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("PersistentVolumeClaim"), std::string::npos) << s.error_message();
  EXPECT_FALSE(Exists(BackingFile(inline_id)));
  EXPECT_FALSE(Exists(MountInfoDir(inline_target)));
  EXPECT_EQ(Capacity(), kCapacity);
}

TEST_F(CsiConformanceTest, BlockLifecycle) {
  const std::string id = MustCreate("pvc-block", kGi, BlockCap(AM::SINGLE_NODE_SINGLE_WRITER));
  ASSERT_TRUE(Stage(id, BlockCap(AM::SINGLE_NODE_SINGLE_WRITER)).ok());
  const std::string target = TargetPath(id);
  ASSERT_TRUE(Publish(PublishReq(id, target, BlockCap(AM::SINGLE_NODE_SINGLE_WRITER))).ok());
  struct stat st {};
  ASSERT_EQ(lstat(target.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_size, 0);
  auto mi = MountInfoOf(target);
  EXPECT_EQ(mi["metadata"]["cocostorage.dev/volumeMode"], "block");
  EXPECT_EQ(mi["metadata"]["createFilesystem"], "false");
  EXPECT_EQ(mi["metadata"]["encryptionKey"], "ephemeral");
  EXPECT_EQ(mi["metadata"]["cocostorage.dev/kind"], "ephemeral");
  EXPECT_EQ(mi["options"], nlohmann::json::array());
  ASSERT_TRUE(Unpublish(id, target).ok());
  EXPECT_FALSE(Exists(target));
  ASSERT_TRUE(Unstage(id).ok());
  ASSERT_TRUE(Delete(id).ok());
}

TEST_F(CsiConformanceTest, NodeRejectsInvalidRequests) {
  const std::string id = MustCreate("pvc-n", kGi);
  // Stage.
  EXPECT_CODE(Stage("", MountCap()), INVALID_ARGUMENT);
  EXPECT_CODE(Stage(id, MountCap(), "relative/staging"), INVALID_ARGUMENT);
  EXPECT_CODE(Stage(id, MountCap(), kubelet_ + "/a/../../escape"), INVALID_ARGUMENT);
  EXPECT_CODE(Stage(id, MountCap(AM::MULTI_NODE_MULTI_WRITER)), FAILED_PRECONDITION);
  EXPECT_CODE(Stage("cv-unknown", MountCap()), NOT_FOUND);
  pb::NodeStageVolumeRequest no_cap;
  no_cap.set_volume_id(id);
  no_cap.set_staging_target_path(StagingPath(id));
  pb::NodeStageVolumeResponse sr;
  EXPECT_CODE(node_->NodeStageVolume(Ctx().get(), no_cap, &sr), INVALID_ARGUMENT);
  EXPECT_CODE(Unstage("", StagingPath(id)), INVALID_ARGUMENT);
  EXPECT_CODE(Unstage(id, "not/absolute"), INVALID_ARGUMENT);

  // Publish.
  const std::string target = TargetPath(id);
  EXPECT_CODE(Publish(PublishReq(id, target)), FAILED_PRECONDITION);  // not staged
  ASSERT_TRUE(Stage(id).ok());
  auto no_staging = PublishReq(id, target);
  no_staging.clear_staging_target_path();
  EXPECT_CODE(Publish(no_staging), FAILED_PRECONDITION);
  auto wrong_staging = PublishReq(id, target);
  wrong_staging.set_staging_target_path(kubelet_ + "/other-staging");
  EXPECT_CODE(Publish(wrong_staging), FAILED_PRECONDITION);
  EXPECT_CODE(Publish(PublishReq("", target)), INVALID_ARGUMENT);
  EXPECT_CODE(Publish(PublishReq(id, "")), INVALID_ARGUMENT);
  EXPECT_CODE(Publish(PublishReq(id, "pods/x/mount")), INVALID_ARGUMENT);
  EXPECT_CODE(Publish(PublishReq(id, target + "/../../../../etc")), INVALID_ARGUMENT);
  EXPECT_CODE(Publish(PublishReq(id, target + "/")), INVALID_ARGUMENT);
  EXPECT_CODE(Publish(PublishReq(id, "/" + std::string(300, 'x'))), INVALID_ARGUMENT);
  EXPECT_CODE(Publish(PublishReq("cv-unknown", target)), NOT_FOUND);
  EXPECT_CODE(Publish(PublishReq(id, target, MountCap(AM::MULTI_NODE_SINGLE_WRITER))), FAILED_PRECONDITION);
  EXPECT_CODE(Publish(PublishReq(id, target, MountCap(AM::SINGLE_NODE_WRITER, "xfs"))), FAILED_PRECONDITION);
  EXPECT_CODE(Publish(PublishReq(id, target, BlockCap())), FAILED_PRECONDITION);
  auto bad_group = PublishReq(id, target);
  bad_group.mutable_volume_capability()->mutable_mount()->set_volume_mount_group("wheel");
  EXPECT_CODE(Publish(bad_group), INVALID_ARGUMENT);
  // fsGroup above 2^31-1: the guest would refuse it, so we do, before anything is made.
  bad_group.mutable_volume_capability()->mutable_mount()->set_volume_mount_group("2147483648");
  EXPECT_CODE(Publish(bad_group), INVALID_ARGUMENT);
  bad_group.mutable_volume_capability()->mutable_mount()->set_volume_mount_group("4294967295");
  EXPECT_CODE(Publish(bad_group), INVALID_ARGUMENT);
  auto no_cap_pub = PublishReq(id, target);
  no_cap_pub.clear_volume_capability();
  EXPECT_CODE(Publish(no_cap_pub), INVALID_ARGUMENT);
  EXPECT_CODE(Publish(PublishReq(id, kubelet_ + "/no-such-parent/mount")), FAILED_PRECONDITION);
  // A symlink planted at the target is never followed.
  const std::string link_target = TargetPath(id, 7);
  ASSERT_EQ(symlink("/etc", link_target.c_str()), 0);
  EXPECT_CODE(Publish(PublishReq(id, link_target)), FAILED_PRECONDITION);
  EXPECT_TRUE(Exists(link_target));
  // Another volume's descriptor at a target is never taken over.
  const std::string id2 = MustCreate("pvc-n2", kGi);
  ASSERT_TRUE(Stage(id2).ok());
  const std::string shared_target = TargetPath(id2, 5);
  ASSERT_TRUE(Publish(PublishReq(id2, shared_target)).ok());
  EXPECT_CODE(Publish(PublishReq(id, shared_target)), FAILED_PRECONDITION);
  EXPECT_TRUE(Unpublish(id, shared_target).ok());  // not ours: left alone
  EXPECT_EQ(MountInfoOf(shared_target)["metadata"]["cocostorage.dev/volumeId"], id2);
  ASSERT_TRUE(Unpublish(id2, shared_target).ok());
  // None of the failures left a descriptor behind.
  DIR* d = opendir(plugin_->kata_root().c_str());
  ASSERT_NE(d, nullptr);
  int entries = 0;
  while (dirent* e = readdir(d)) entries += e->d_name[0] != '.';
  closedir(d);
  EXPECT_EQ(entries, 0);
  // Unpublish.
  EXPECT_CODE(Unpublish("", target), INVALID_ARGUMENT);
  EXPECT_CODE(Unpublish(id, ""), INVALID_ARGUMENT);
  EXPECT_CODE(Unpublish(id, "relative"), INVALID_ARGUMENT);
  EXPECT_TRUE(Unpublish("cv-unknown", target).ok());  // not published there
  EXPECT_TRUE(Unpublish(id, target).ok());
  // Stats / expand.
  pb::NodeGetVolumeStatsRequest sreq;
  pb::NodeGetVolumeStatsResponse stats;
  EXPECT_CODE(node_->NodeGetVolumeStats(Ctx().get(), sreq, &stats), INVALID_ARGUMENT);
  sreq.set_volume_id(id);
  EXPECT_CODE(node_->NodeGetVolumeStats(Ctx().get(), sreq, &stats), INVALID_ARGUMENT);
  sreq.set_volume_path(kubelet_ + "/nowhere");
  EXPECT_CODE(node_->NodeGetVolumeStats(Ctx().get(), sreq, &stats), NOT_FOUND);
  sreq.set_volume_id("cv-unknown");
  EXPECT_CODE(node_->NodeGetVolumeStats(Ctx().get(), sreq, &stats), NOT_FOUND);
  pb::NodeExpandVolumeRequest ereq;
  pb::NodeExpandVolumeResponse eresp;
  EXPECT_CODE(node_->NodeExpandVolume(Ctx().get(), ereq, &eresp), INVALID_ARGUMENT);
  ereq.set_volume_id("cv-unknown");
  ereq.set_volume_path(target);
  EXPECT_CODE(node_->NodeExpandVolume(Ctx().get(), ereq, &eresp), NOT_FOUND);
}

// ---------------------------------------------------------------- Inline ephemeral

TEST_F(CsiConformanceTest, InlineEphemeralVolumeLivesAndDiesWithThePod) {
  const std::string id = "csi-0123456789abcdef0123456789abcdef";
  const std::string target = TargetPath(id);
  pb::NodePublishVolumeRequest req;
  req.set_volume_id(id);
  req.set_target_path(target);
  *req.mutable_volume_capability() = MountCap();
  (*req.mutable_volume_context())["csi.storage.k8s.io/ephemeral"] = "true";
  (*req.mutable_volume_context())["csi.storage.k8s.io/pod.name"] = "app";
  (*req.mutable_volume_context())["size"] = "64Mi";
  (*req.mutable_volume_context())["integrity"] = "aegis128";
  ASSERT_TRUE(Publish(req).ok());
  ASSERT_TRUE(Publish(req).ok());  // repeated
  struct stat st {};
  ASSERT_EQ(stat(BackingFile(id).c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 64 * kMi);
  EXPECT_EQ(Capacity(), kCapacity - 64 * kMi);
  auto mi = MountInfoOf(target);
  EXPECT_EQ(mi["metadata"]["encryptionKey"], "ephemeral");
  EXPECT_EQ(mi["metadata"]["createFilesystem"], "true");
  EXPECT_EQ(mi["metadata"]["cocostorage.dev/integrity"], "aegis128");
  EXPECT_EQ(mi["metadata"]["cocostorage.dev/kind"], "ephemeral");
  EXPECT_EQ(mi["metadata"].count("cocostorage.dev/kbsResourceUri"), 0u);
  EXPECT_EQ(mi["metadata"]["cocostorage.dev/volumeId"], id);

  ASSERT_TRUE(Unpublish(id, target).ok());
  EXPECT_FALSE(Exists(BackingFile(id)));  // destroyed with the pod
  EXPECT_FALSE(Exists(MountInfoDir(target)));
  EXPECT_EQ(Capacity(), kCapacity);
  EXPECT_TRUE(Unpublish(id, target).ok());  // repeated

  auto kbs = req;
  (*kbs.mutable_volume_context())["keySource"] = "kbs";
  (*kbs.mutable_volume_context())["kbsResourceUri"] = "kbs:///a/b/c";
  EXPECT_CODE(Publish(kbs), INVALID_ARGUMENT);
  auto bad_size = req;
  (*bad_size.mutable_volume_context())["size"] = "lots";
  EXPECT_CODE(Publish(bad_size), INVALID_ARGUMENT);
  auto unknown = req;
  (*unknown.mutable_volume_context())["color"] = "blue";
  EXPECT_CODE(Publish(unknown), INVALID_ARGUMENT);
  auto conflict = req;  // fsType attribute vs capability: refused, nothing left behind
  (*conflict.mutable_volume_context())["fsType"] = "xfs";
  *conflict.mutable_volume_capability() = MountCap(AM::SINGLE_NODE_WRITER, "ext4");
  EXPECT_CODE(Publish(conflict), INVALID_ARGUMENT);
  EXPECT_FALSE(Exists(BackingFile(id)));
  EXPECT_EQ(Capacity(), kCapacity);
  auto zero = req;  // not the 1 GiB default: a size must be > 0
  (*zero.mutable_volume_context())["size"] = "0";
  EXPECT_CODE(Publish(zero), INVALID_ARGUMENT);
  (*zero.mutable_volume_context())["size"] = "0Gi";
  EXPECT_CODE(Publish(zero), INVALID_ARGUMENT);
  EXPECT_FALSE(Exists(BackingFile(id)));
  auto huge = req;
  (*huge.mutable_volume_context())["size"] = "1025Ti";
  EXPECT_CODE(Publish(huge), INVALID_ARGUMENT);
  (*huge.mutable_volume_context())["size"] = "1Pi";
  EXPECT_CODE(Publish(huge), INVALID_ARGUMENT);
  (*huge.mutable_volume_context())["size"] = "1000Ti";
  EXPECT_CODE(Publish(huge), OUT_OF_RANGE);
  EXPECT_FALSE(Exists(BackingFile(id)));
  EXPECT_EQ(Capacity(), kCapacity);
}

// ---------------------------------------------------------------- Expansion

// Expansion is the controller's alone: the node does not advertise
// EXPAND_VOLUME, the controller says node_expansion_required=false, and every
// later answer (NodeExpandVolume if called anyway, stats, a re-create) reports
// the size the controller returned.
TEST_F(CsiConformanceTest, ExpansionAnswersAgreeAndNodeExpansionIsNotAdvertised) {
  pb::NodeGetCapabilitiesResponse nc;
  ASSERT_TRUE(node_->NodeGetCapabilities(Ctx().get(), {}, &nc).ok());
  for (const auto& c : nc.capabilities()) EXPECT_NE(c.rpc().type(), pb::NodeServiceCapability::RPC::EXPAND_VOLUME);
  pb::GetPluginCapabilitiesResponse pc;
  ASSERT_TRUE(identity_->GetPluginCapabilities(Ctx().get(), {}, &pc).ok());
  bool offline = false;
  for (const auto& c : pc.capabilities()) {
    if (c.has_volume_expansion()) {
      EXPECT_EQ(c.volume_expansion().type(), pb::PluginCapability::VolumeExpansion::OFFLINE);
      offline = true;
    }
  }
  EXPECT_TRUE(offline);
  const std::string id = MustCreate("grow", kGi);
  pb::ControllerExpandVolumeRequest creq;
  creq.set_volume_id(id);
  creq.mutable_capacity_range()->set_required_bytes(3 * kGi);
  pb::ControllerExpandVolumeResponse cresp;
  ASSERT_TRUE(controller_->ControllerExpandVolume(Ctx().get(), creq, &cresp).ok());
  EXPECT_EQ(cresp.capacity_bytes(), 3 * kGi);
  EXPECT_FALSE(cresp.node_expansion_required());
  ASSERT_TRUE(Stage(id).ok());
  const std::string target = TargetPath(id);
  ASSERT_TRUE(Publish(PublishReq(id, target)).ok());
  pb::NodeExpandVolumeRequest nreq;
  nreq.set_volume_id(id);
  nreq.set_volume_path(target);
  nreq.mutable_capacity_range()->set_required_bytes(3 * kGi);
  pb::NodeExpandVolumeResponse nresp;
  ASSERT_TRUE(node_->NodeExpandVolume(Ctx().get(), nreq, &nresp).ok());
  EXPECT_EQ(nresp.capacity_bytes(), cresp.capacity_bytes());
  nreq.mutable_capacity_range()->set_required_bytes(4 * kGi);  // more than the controller made
  EXPECT_CODE(node_->NodeExpandVolume(Ctx().get(), nreq, &nresp), OUT_OF_RANGE);
  pb::NodeGetVolumeStatsRequest sreq;
  sreq.set_volume_id(id);
  sreq.set_volume_path(target);
  pb::NodeGetVolumeStatsResponse sresp;
  ASSERT_TRUE(node_->NodeGetVolumeStats(Ctx().get(), sreq, &sresp).ok());
  EXPECT_EQ(sresp.usage(0).total(), cresp.capacity_bytes());
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
}

TEST_F(CsiConformanceTest, ControllerExpandVolumeOffline) {
  const std::string id = MustCreate("grow", kGi);
  pb::ControllerExpandVolumeRequest req;
  req.set_volume_id(id);
  req.mutable_capacity_range()->set_required_bytes(3 * kGi);
  pb::ControllerExpandVolumeResponse resp;
  ASSERT_TRUE(controller_->ControllerExpandVolume(Ctx().get(), req, &resp).ok());
  EXPECT_EQ(resp.capacity_bytes(), 3 * kGi);
  EXPECT_FALSE(resp.node_expansion_required());
  ASSERT_TRUE(controller_->ControllerExpandVolume(Ctx().get(), req, &resp).ok());  // repeated
  EXPECT_EQ(resp.capacity_bytes(), 3 * kGi);
  struct stat st {};
  ASSERT_EQ(stat(BackingFile(id).c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 3 * kGi);
  EXPECT_EQ(Capacity(), kCapacity - 3 * kGi);
  auto small = req;
  small.mutable_capacity_range()->set_required_bytes(kGi);  // never shrinks
  ASSERT_TRUE(controller_->ControllerExpandVolume(Ctx().get(), small, &resp).ok());
  EXPECT_EQ(resp.capacity_bytes(), 3 * kGi);
  auto too_big = req;
  too_big.mutable_capacity_range()->set_required_bytes(kCapacity * 2);
  EXPECT_CODE(controller_->ControllerExpandVolume(Ctx().get(), too_big, &resp), OUT_OF_RANGE);
  auto unknown = req;
  unknown.set_volume_id("cv-unknown");
  EXPECT_CODE(controller_->ControllerExpandVolume(Ctx().get(), unknown, &resp), NOT_FOUND);
  auto no_range = req;
  no_range.clear_capacity_range();
  EXPECT_CODE(controller_->ControllerExpandVolume(Ctx().get(), no_range, &resp), INVALID_ARGUMENT);
  // In use: offline only.
  ASSERT_TRUE(Stage(id).ok());
  auto more = req;
  more.mutable_capacity_range()->set_required_bytes(4 * kGi);
  EXPECT_CODE(controller_->ControllerExpandVolume(Ctx().get(), more, &resp), FAILED_PRECONDITION);
  const std::string target = TargetPath(id);
  ASSERT_TRUE(Publish(PublishReq(id, target)).ok());
  pb::NodeExpandVolumeRequest nreq;
  nreq.set_volume_id(id);
  nreq.set_volume_path(target);
  pb::NodeExpandVolumeResponse nresp;
  ASSERT_TRUE(node_->NodeExpandVolume(Ctx().get(), nreq, &nresp).ok());
  EXPECT_EQ(nresp.capacity_bytes(), 3 * kGi);
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
  ASSERT_TRUE(Delete(id).ok());
}

// ---------------------------------------------------------------- Concurrency

TEST_F(CsiConformanceTest, ConcurrentCreatesOfOneNameYieldOneVolume) {
  constexpr int kThreads = 16;
  std::vector<std::string> ids(kThreads);
  std::vector<grpc::Status> st(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      pb::CreateVolumeResponse resp;
      st[i] = Create(CreateReq("same", 5 * kGi), &resp);
      ids[i] = resp.volume().volume_id();
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_TRUE(st[i].ok()) << st[i].error_message();
    EXPECT_EQ(ids[i], ids[0]);
  }
  EXPECT_EQ(Capacity(), kCapacity - 5 * kGi);
  // And concurrent deletes of it.
  threads.clear();
  for (int i = 0; i < kThreads; ++i) threads.emplace_back([&, i] { st[i] = Delete(ids[0]); });
  for (auto& t : threads) t.join();
  for (const auto& s : st) EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Capacity(), kCapacity);
}

TEST_F(CsiConformanceTest, ConcurrentPodLifecycles) {
  constexpr int kPods = 24;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kPods; ++i) {
    threads.emplace_back([&, i] {
      auto check = [&](const grpc::Status& s, const char* what) {
        if (!s.ok()) {
          ++failures;
          ADD_FAILURE() << what << " pod " << i << ": " << s.error_message();
        }
      };
      pb::CreateVolumeResponse resp;
      check(Create(CreateReq("pod-" + std::to_string(i), (i % 4 + 1) * kGi), &resp), "create");
      const std::string id = resp.volume().volume_id();
      const std::string target = TargetPath(id);
      check(Stage(id), "stage");
      check(Publish(PublishReq(id, target)), "publish");
      check(Publish(PublishReq(id, target)), "publish again");
      check(Unpublish(id, target), "unpublish");
      check(Unstage(id), "unstage");
      check(Delete(id), "delete");
    });
  }
  // Capacity queries race with all of it and never exceed the total.
  for (int i = 0; i < 20; ++i) {
    int64_t c = Capacity();
    EXPECT_GE(c, 0);
    EXPECT_LE(c, kCapacity);
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(Capacity(), kCapacity);
}

TEST_F(CsiConformanceTest, ConcurrentPublishesOfOneVolumeAgree) {
  const std::string id = MustCreate("shared", kGi);
  ASSERT_TRUE(Stage(id).ok());
  constexpr int kThreads = 8;
  std::vector<grpc::Status> st(kThreads);
  std::vector<std::thread> threads;
  const std::string target = TargetPath(id);
  for (int i = 0; i < kThreads; ++i) {
    // Half retry the same target, half are other pods: exactly one target wins.
    threads.emplace_back([&, i] { st[i] = Publish(PublishReq(id, i % 2 ? target : TargetPath(id, i))); });
  }
  for (auto& t : threads) t.join();
  int ok = 0;
  std::set<std::string> descriptors;
  for (int i = 0; i < kThreads; ++i) {
    if (st[i].ok()) {
      ++ok;
      descriptors.insert(i % 2 ? target : TargetPath(id, i));
    } else {
      EXPECT_EQ(st[i].error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st[i].error_message();
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_EQ(descriptors.size(), 1u);
  for (const auto& t : descriptors) ASSERT_TRUE(Unpublish(id, t).ok());
  ASSERT_TRUE(Unstage(id).ok());
  ASSERT_TRUE(Delete(id).ok());
}

// ---------------------------------------------------------------- Restarts

// Two publications of different volumes at one target, started together:
// exactly one wins and the descriptor names the winner (the target lock makes
// the "no other volume here" check and the write one step). Repeated to give
// an unlocked implementation every chance to interleave.
TEST_F(CsiConformanceTest, ConcurrentPublishesOfTwoVolumesAtOneTargetHaveOneWinner) {
  const std::string a = MustCreate("race-a", kGi), b = MustCreate("race-b", kGi);
  ASSERT_TRUE(Stage(a).ok());
  ASSERT_TRUE(Stage(b).ok());
  for (int round = 0; round < 25; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string target = TargetPath("race", round);
    std::barrier start(2);
    grpc::Status sa, sb;
    std::thread ta([&] {
      auto req = PublishReq(a, target);
      start.arrive_and_wait();
      sa = Publish(req);
    });
    std::thread tb([&] {
      auto req = PublishReq(b, target);
      start.arrive_and_wait();
      sb = Publish(req);
    });
    ta.join();
    tb.join();
    ASSERT_NE(sa.ok(), sb.ok()) << sa.error_message() << " / " << sb.error_message();
    const grpc::Status& loser = sa.ok() ? sb : sa;
    EXPECT_EQ(loser.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << loser.error_message();
    const std::string& winner = sa.ok() ? a : b;
    EXPECT_EQ(MountInfoOf(target)["metadata"]["cocostorage.dev/volumeId"], winner);
    ASSERT_TRUE(Unpublish(winner, target).ok());
  }
}

TEST_F(CsiConformanceTest, RestartMidLifecycleAnswersCorrectly) {
  auto req = CreateReq("pvc-restart", 8 * kGi);
  pb::CreateVolumeResponse created;
  ASSERT_TRUE(Create(req, &created).ok());
  const std::string id = created.volume().volume_id();
  ASSERT_TRUE(Stage(id).ok());
  const std::string target = TargetPath(id);
  ASSERT_TRUE(Publish(PublishReq(id, target)).ok());
  const std::string before = ReadFile(MountInfoDir(target) + "/mountInfo.json");
  const int64_t cap_before = Capacity();

  RestartPlugin();  // SIGTERM: drains and exits 0; then the same directories again

  // kubelet retries / reconciles: everything answers as before.
  pb::CreateVolumeResponse again;
  ASSERT_TRUE(Create(req, &again).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(again, created)) << again.DebugString();
  EXPECT_EQ(Capacity(), cap_before);
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(PublishReq(id, target)).ok());
  EXPECT_EQ(ReadFile(MountInfoDir(target) + "/mountInfo.json"), before);
  EXPECT_CODE(Publish(PublishReq(id, TargetPath(id, 1))), FAILED_PRECONDITION);
  EXPECT_CODE(Delete(id), FAILED_PRECONDITION);
  pb::NodeGetVolumeStatsRequest sreq;
  sreq.set_volume_id(id);
  sreq.set_volume_path(target);
  pb::NodeGetVolumeStatsResponse stats;
  ASSERT_TRUE(node_->NodeGetVolumeStats(Ctx().get(), sreq, &stats).ok());
  EXPECT_EQ(stats.usage(0).total(), 8 * kGi);

  // Restart again and finish the pod's life cycle.
  RestartPlugin();
  ASSERT_TRUE(Unpublish(id, target).ok());
  EXPECT_FALSE(Exists(MountInfoDir(target)));
  ASSERT_TRUE(Unstage(id).ok());
  ASSERT_TRUE(Delete(id).ok());
  EXPECT_EQ(Capacity(), kCapacity);
}

TEST_F(CsiConformanceTest, CrashMidLifecycleKeepsState) {
  const std::string id = MustCreate("pvc-crash", kGi);
  ASSERT_TRUE(Stage(id).ok());
  const std::string target = TargetPath(id);
  ASSERT_TRUE(Publish(PublishReq(id, target)).ok());
  const std::string inline_id = "csi-feedface";
  const std::string inline_target = TargetPath(inline_id);
  auto inline_req = PublishReq(inline_id, inline_target);
  inline_req.clear_staging_target_path();
  (*inline_req.mutable_volume_context())["csi.storage.k8s.io/ephemeral"] = "true";
  (*inline_req.mutable_volume_context())["size"] = "16Mi";
  ASSERT_TRUE(Publish(inline_req).ok());
  // Backing files no record names: one with bytes (a lost record, say), one
  // a create that crashed before its commit point left, never written.
  { std::ofstream(plugin_->backing_root() + "/cv-orphan.img") << "someone's data"; }
  { std::ofstream(plugin_->backing_root() + "/cv-uncommitted.img"); }

  DropStubs();
  plugin_->Stop(SIGKILL);
  StartPlugin(extra_);

  EXPECT_FALSE(Exists(plugin_->backing_root() + "/cv-orphan.img"));  // no longer a volume
  {
    DIR* d = opendir(plugin_->backing_root().c_str());
    ASSERT_NE(d, nullptr);
    bool kept = false;
    while (dirent* e = readdir(d)) kept |= std::string(e->d_name).rfind("cv-orphan.img.orphan-", 0) == 0;
    closedir(d);
    EXPECT_TRUE(kept);  // but its bytes are set aside, not destroyed
  }
  EXPECT_FALSE(Exists(plugin_->backing_root() + "/cv-uncommitted.img"));  // holds no byte: removed
  EXPECT_EQ(Capacity(), kCapacity - kGi - 16 * kMi);
  EXPECT_CODE(Delete(id), FAILED_PRECONDITION);
  ASSERT_TRUE(Unpublish(inline_id, inline_target).ok());
  EXPECT_FALSE(Exists(BackingFile(inline_id)));
  ASSERT_TRUE(Unpublish(id, target).ok());
  ASSERT_TRUE(Unstage(id).ok());
  ASSERT_TRUE(Delete(id).ok());
  EXPECT_EQ(Capacity(), kCapacity);
}

TEST_F(CsiConformanceTest, SigtermDrainsInFlightCalls) {
  // A publish is held inside the plugin: the descriptor it must read first
  // (is another volume's descriptor at this target?) is a FIFO, so its
  // open() blocks until we open the other end. Our open() returning proves
  // the call is in flight; it is released only once the plugin logged that
  // it is draining, and must still complete, durably.
  const std::string id = MustCreate("drain", kGi);
  ASSERT_TRUE(Stage(id).ok());
  const std::string target = TargetPath(id);
  ASSERT_EQ(mkdir(MountInfoDir(target).c_str(), 0700), 0);
  const std::string fifo = MountInfoDir(target) + "/mountInfo.json";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  grpc::Status published;
  std::thread call([&] { published = Publish(PublishReq(id, target)); });
  int fd = open(fifo.c_str(), O_WRONLY);  // blocks until the plugin is reading
  ASSERT_GE(fd, 0);
  ASSERT_EQ(kill(plugin_->pid(), SIGTERM), 0);
  // Wait (no timing assumption, only a hang guard) for the plugin to say it
  // is draining.
  const auto guard = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (ReadFile(plugin_->log_path()).find("\"csi.draining\"") == std::string::npos) {
    ASSERT_LT(std::chrono::steady_clock::now(), guard) << "plugin never started draining";
    std::this_thread::yield();
  }
  const std::string ours =
      "{\"volume-type\":\"blk\",\"device\":\"x\",\"fstype\":\"ext4\",\"metadata\":"
      "{\"cocostorage.dev/volumeId\":\"" +
      id + "\"},\"options\":[]}";
  ASSERT_EQ(write(fd, ours.data(), ours.size()), static_cast<ssize_t>(ours.size()));
  close(fd);
  call.join();
  EXPECT_TRUE(published.ok()) << published.error_code() << ": " << published.error_message();
  DropStubs();
  int st = plugin_->Stop(SIGTERM);
  ASSERT_TRUE(WIFEXITED(st)) << st;
  EXPECT_EQ(WEXITSTATUS(st), 0);
  // What completed during the drain is durable: the restarted plugin knows
  // the publication and the real descriptor replaced the FIFO.
  StartPlugin(extra_);
  EXPECT_EQ(MountInfoOf(target)["metadata"]["cocostorage.dev/volumeId"], id);
  EXPECT_EQ(MountInfoOf(target)["device"], BackingFile(id));
  EXPECT_CODE(Unstage(id), FAILED_PRECONDITION);  // still published
  EXPECT_TRUE(Unpublish(id, target).ok());
  EXPECT_TRUE(Unstage(id).ok());
}

TEST(CsiFlagsTest, RejectsBadFlags) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {},                                // no endpoint
           {"--endpoint=tcp://127.0.0.1:1"},  // not unix
           {"--endpoint=unix:///tmp/x.sock", "--capacity-bytes=-5"},
           {"--endpoint=unix:///tmp/x.sock", "--log-level=loud"},
           {"--endpoint=unix:///tmp/x.sock", "--no-such-flag=1"},
           {"--endpoint=unix:///tmp/x.sock", "--kubelet-root=var/lib/kubelet"},  // not absolute
       }) {
    std::string cmd = std::string(CSI_PLUGIN_BINARY);
    for (const auto& a : args) cmd += " '" + a + "'";
    cmd += " 2>/dev/null";
    int rc = std::system(cmd.c_str());
    ASSERT_TRUE(WIFEXITED(rc));
    EXPECT_NE(WEXITSTATUS(rc), 0) << cmd;
  }
}

}  // namespace
}  // namespace cocostorage::csi
