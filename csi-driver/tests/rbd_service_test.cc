// The CSI services with --backend=rbd, in process: the real cluster backend
// (RbdClusterBackend: credentials, parameters, connection reuse) over an
// in-memory "cluster" shared by two nodes, and FakeRbdMapper for the kernel
// map step. Ceph itself is exercised in tests/ceph.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <map>
#include <memory>
#include <set>

#include "cocostorage/testing/status_matchers.h"
#include "controller_service.h"
#include "driver.h"
#include "fake_rbd_mapper.h"
#include "identity_service.h"
#include "node_service.h"
#include "plugin_harness.h"
#include "rbd_backend.h"

namespace cocostorage::csi {
namespace {

namespace pb = ::csi::v1;
using ::cocostorage::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kMons[] = "v2:10.0.0.1:3300,v2:10.0.0.2:3300";
constexpr char kProvisionerKey[] = "AQprovisionerprovisionerprovisioner==";
constexpr char kNodeKey[] = "AQnodenodenodenodenodenodenodenode==";
constexpr char kPluginKey[] = "AQpluginpluginpluginpluginplugin==";

// One pool of the fake cluster: image sizes by volume id.
struct FakePool {
  std::string name;
  std::map<std::string, int64_t> images;
  std::set<std::string> watched;  // mapped somewhere: removal refused
};

// What one (cluster, pool, credentials) connection of the cluster backend
// does, over a FakePool.
class FakePoolBackend final : public VolumeBackend {
 public:
  explicit FakePoolBackend(FakePool* pool) : pool_(pool) {}
  std::string Name() const override { return "rbd"; }
  StatusOr<BackingInfo> Create(const std::string& id, int64_t size) override {
    auto& v = pool_->images[id];
    v = std::max(v, size);
    return Info(id);
  }
  Status Delete(const std::string& id) override {
    if (pool_->watched.count(id)) return absl::FailedPreconditionError("image still has watchers");
    pool_->images.erase(id);
    return OkStatus();
  }
  StatusOr<BackingInfo> Expand(const std::string& id, int64_t size) override {
    if (!pool_->images.count(id)) return absl::NotFoundError(id);
    pool_->images[id] = std::max(pool_->images[id], size);
    return Info(id);
  }
  StatusOr<BackingInfo> Stat(const std::string& id) const override {
    if (!pool_->images.count(id)) return absl::NotFoundError(Cat("image ", RbdImageName(id), " does not exist"));
    return Info(id);
  }
  Status Quarantine(const std::string&) override { return absl::UnimplementedError("not in these tests"); }
  StatusOr<std::vector<std::string>> List() const override { return absl::UnimplementedError("never listed"); }
  StatusOr<int64_t> FreeBytes() const override { return int64_t{7} << 40; }
  Status Check() const override { return OkStatus(); }

 private:
  BackingInfo Info(const std::string& id) const {
    return BackingInfo{RbdDeviceRef(pool_->name, RbdImageName(id)), pool_->images.at(id), 0};
  }
  FakePool* pool_;
};

// One node: its own state dir, Kata dir and mapper; the cluster is shared.
struct Node {
  std::unique_ptr<Driver> driver;
  FakeRbdMapper* mapper = nullptr;
  std::unique_ptr<ControllerService> controller;
  std::unique_ptr<NodeService> node;
};

class RbdServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_.name = "replicapool";
    a_ = MakeNode("node-a", std::nullopt);
    b_ = MakeNode("node-b", std::nullopt);
  }

  Node MakeNode(const std::string& name, std::optional<RbdCredentials> own) {
    Node n;
    DriverConfig c;
    c.node_id = name;
    const std::string root = tmp_.path() + "/" + name;
    mkdir(root.c_str(), 0700);
    c.backing_root = root + "/backing";
    c.state_dir = root + "/state";
    c.kata_root = root + "/kata";
    c.kubelet_root = tmp_.path() + "/kubelet";  // same path layout on every node
    mkdir(c.kubelet_root.c_str(), 0750);
    c.rbd_credentials = own;
    c.rbd_monitors = kMons;
    c.rbd_timeout = std::chrono::seconds(5);
    auto backend =
        NewRbdClusterBackend(kMons, own, std::chrono::seconds(5), [this](RbdOptions o) -> StatusOr<VolumeBackendPtr> {
          made_.push_back(o);
          if (o.pool != pool_.name) return absl::NotFoundError(Cat("opening pool ", o.pool));
          return VolumeBackendPtr(std::make_unique<FakePoolBackend>(&pool_));
        });
    auto mapper = std::make_unique<FakeRbdMapper>();
    n.mapper = mapper.get();
    n.driver = std::make_unique<Driver>(c, std::move(backend), std::move(mapper));
    Status s = n.driver->Init();
    EXPECT_TRUE(s.ok()) << s;
    n.controller = std::make_unique<ControllerService>(n.driver->ForController());
    n.node = std::make_unique<NodeService>(n.driver->ForNode());
    return n;
  }

  static pb::CreateVolumeRequest CreateReq(const std::string& name, int64_t bytes) {
    auto r = testing::CreateReq(name, bytes, testing::BlockCap());
    (*r.mutable_parameters())["monitors"] = kMons;
    (*r.mutable_parameters())["pool"] = "replicapool";
    (*r.mutable_secrets())["userID"] = "csi-rbd-provisioner";
    (*r.mutable_secrets())["userKey"] = kProvisionerKey;
    return r;
  }

  pb::NodeStageVolumeRequest StageReq(const pb::Volume& v) {
    pb::NodeStageVolumeRequest r;
    r.set_volume_id(v.volume_id());
    r.set_staging_target_path(Staging(v.volume_id()));
    *r.mutable_volume_capability() = testing::BlockCap();
    *r.mutable_volume_context() = v.volume_context();
    (*r.mutable_secrets())["userID"] = "csi-rbd-node";
    (*r.mutable_secrets())["userKey"] = kNodeKey;
    return r;
  }

  std::string Staging(const std::string& id) {
    const std::string dir = tmp_.path() + "/kubelet/staging";
    mkdir(dir.c_str(), 0750);
    const std::string path = dir + "/" + id;
    mkdir(path.c_str(), 0750);
    return path;
  }

  pb::NodePublishVolumeRequest PublishReq(const pb::Volume& v) {
    const std::string parent = tmp_.path() + "/kubelet/pods";
    mkdir(parent.c_str(), 0750);
    pb::NodePublishVolumeRequest r;
    r.set_volume_id(v.volume_id());
    r.set_staging_target_path(Staging(v.volume_id()));
    r.set_target_path(parent + "/" + v.volume_id());
    *r.mutable_volume_capability() = testing::BlockCap();
    *r.mutable_volume_context() = v.volume_context();
    return r;
  }

  static grpc::StatusCode Stage(Node& n, const pb::NodeStageVolumeRequest& r) {
    pb::NodeStageVolumeResponse resp;
    return n.node->NodeStageVolume(nullptr, &r, &resp).error_code();
  }
  static grpc::Status Unstage(Node& n, const pb::Volume& v, const std::string& staging) {
    pb::NodeUnstageVolumeRequest r;
    r.set_volume_id(v.volume_id());
    r.set_staging_target_path(staging);
    pb::NodeUnstageVolumeResponse resp;
    return n.node->NodeUnstageVolume(nullptr, &r, &resp);
  }
  static grpc::Status Publish(Node& n, const pb::NodePublishVolumeRequest& r) {
    pb::NodePublishVolumeResponse resp;
    return n.node->NodePublishVolume(nullptr, &r, &resp);
  }
  static grpc::Status Unpublish(Node& n, const pb::NodePublishVolumeRequest& p) {
    pb::NodeUnpublishVolumeRequest r;
    r.set_volume_id(p.volume_id());
    r.set_target_path(p.target_path());
    pb::NodeUnpublishVolumeResponse resp;
    return n.node->NodeUnpublishVolume(nullptr, &r, &resp);
  }
  static grpc::Status Delete(Node& n, const std::string& id, bool with_secrets = true) {
    pb::DeleteVolumeRequest r;
    r.set_volume_id(id);
    if (with_secrets) {
      (*r.mutable_secrets())["userID"] = "csi-rbd-provisioner";
      (*r.mutable_secrets())["userKey"] = kProvisionerKey;
    }
    pb::DeleteVolumeResponse resp;
    return n.controller->DeleteVolume(nullptr, &r, &resp);
  }

  testing::TempDir tmp_;
  FakePool pool_;
  std::vector<RbdOptions> made_;  // every connection the cluster backends opened
  Node a_, b_;
};

TEST_F(RbdServiceTest, VolumesNameTheirClusterAndHaveNoTopology) {
  auto req = CreateReq("pvc-1", int64_t{100} << 30);  // far above any node ledger: the pool's to refuse
  // A requisite topology of another node does not matter: reachable anywhere.
  (*req.mutable_accessibility_requirements()->add_requisite()->mutable_segments())[kTopologyKey] = "node-z";
  pb::CreateVolumeResponse resp;
  grpc::Status s = a_.controller->CreateVolume(nullptr, &req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.volume().accessible_topology_size(), 0);
  EXPECT_EQ(resp.volume().volume_context().count("monitors"), 0u);  // never recorded: monitors move
  EXPECT_EQ(resp.volume().volume_context().at("pool"), "replicapool");
  EXPECT_EQ(pool_.images.at(resp.volume().volume_id()), int64_t{100} << 30);
  ASSERT_EQ(made_.size(), 1u);
  EXPECT_EQ(made_[0].user, "csi-rbd-provisioner");
  EXPECT_EQ(made_[0].key, kProvisionerKey);
  EXPECT_EQ(made_[0].mon_host, kMons);
  EXPECT_EQ(made_[0].timeout, std::chrono::seconds(5));
  // Retried: same volume, and the connection is reused.
  pb::CreateVolumeResponse again;
  ASSERT_TRUE(a_.controller->CreateVolume(nullptr, &req, &again).ok());
  EXPECT_EQ(again.volume().volume_id(), resp.volume().volume_id());
  EXPECT_EQ(made_.size(), 1u);
  // The record holds no secret.
  auto rec = a_.driver->store.Load(resp.volume().volume_id());
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_THAT(RecordToJson(**rec), Not(HasSubstr(kProvisionerKey)));
  EXPECT_EQ((*rec)->device, Cat("rbd:replicapool/coco-vol-", resp.volume().volume_id()));
}

TEST_F(RbdServiceTest, BadRequestsAreRefusedWithTheRightCode) {
  pb::CreateVolumeResponse resp;
  auto no_secrets = CreateReq("pvc-1", 1 << 30);
  no_secrets.clear_secrets();
  grpc::Status s = a_.controller->CreateVolume(nullptr, &no_secrets, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("--rbd-secret-dir"));
  auto no_pool = CreateReq("pvc-1", 1 << 30);
  no_pool.mutable_parameters()->erase("pool");
  EXPECT_EQ(a_.controller->CreateVolume(nullptr, &no_pool, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto sparse_style = testing::CreateReq("pvc-1", 1 << 30);
  s = a_.controller->CreateVolume(nullptr, &sparse_style, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("monitors and pool"));
  auto bad_pool = CreateReq("pvc-1", 1 << 30);
  (*bad_pool.mutable_parameters())["pool"] = "a/b";
  EXPECT_EQ(a_.controller->CreateVolume(nullptr, &bad_pool, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto other_pool = CreateReq("pvc-1", 1 << 30);
  (*other_pool.mutable_parameters())["pool"] = "nopool";
  EXPECT_EQ(a_.controller->CreateVolume(nullptr, &other_pool, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(pool_.images.empty());
  // Inline ephemeral volumes need node-local backing.
  pb::NodePublishVolumeRequest inline_req;
  inline_req.set_volume_id("csi-0123abcd");
  inline_req.set_target_path(tmp_.path() + "/kubelet/pods-inline");
  *inline_req.mutable_volume_capability() = testing::BlockCap();
  (*inline_req.mutable_volume_context())["csi.storage.k8s.io/ephemeral"] = "true";
  EXPECT_EQ(Publish(a_, inline_req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(RbdServiceTest, AnyNodeStagesMapsPublishesTheDeviceAndUnmapsOnUnstage) {
  auto req = CreateReq("pvc-1", 1 << 30);
  pb::CreateVolumeResponse created;
  ASSERT_TRUE(a_.controller->CreateVolume(nullptr, &req, &created).ok());
  const pb::Volume& v = created.volume();
  const std::string id = v.volume_id();

  // Node B never saw the volume: the volume context is all it needs.
  auto stage = StageReq(v);
  ASSERT_EQ(Stage(b_, stage), grpc::StatusCode::OK);
  EXPECT_EQ(b_.mapper->map_calls(), 1);
  EXPECT_EQ(b_.mapper->last_cluster().user, "csi-rbd-node");  // the node-stage secret, not the provisioner's
  EXPECT_EQ(b_.mapper->last_cluster().pool, "replicapool");
  EXPECT_EQ(b_.mapper->last_cluster().timeout, std::chrono::seconds(5));
  EXPECT_EQ(*b_.mapper->MappedDevice(RbdImageRef{"replicapool", RbdImageName(id)}), "/dev/rbd0");
  ASSERT_EQ(Stage(b_, stage), grpc::StatusCode::OK);  // retried: mapped once
  EXPECT_EQ(*b_.mapper->MappedDevice(RbdImageRef{"replicapool", RbdImageName(id)}), "/dev/rbd0");
  auto rec = b_.driver->store.Load(id);
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_TRUE((*rec)->attached_only);
  EXPECT_EQ((*rec)->capacity_bytes, 1 << 30);  // the image's size
  EXPECT_THAT(RecordToJson(**rec), Not(HasSubstr(kNodeKey)));

  auto pub = PublishReq(v);
  grpc::Status s = Publish(b_, pub);
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto info = b_.driver->mount_info.Read(pub.target_path());
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->device, "/dev/rbd0");  // what Kata hot-plugs: the mapped device
  EXPECT_EQ((*info)->metadata["encryptionKey"], "ephemeral");

  // In use on B: the controller on A cannot delete it (Ceph: watchers).
  pool_.watched.insert(id);
  EXPECT_EQ(Delete(a_, id).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Unstage(b_, v, stage.staging_target_path()).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  ASSERT_TRUE(Unpublish(b_, pub).ok());
  b_.mapper->FailNext(absl::FailedPreconditionError("rbd: sysfs write failed: (16) Device or resource busy"));
  EXPECT_EQ(Unstage(b_, v, stage.staging_target_path()).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(b_.driver->store.Load(id)->has_value());  // kept until the unmap succeeds
  ASSERT_TRUE(Unstage(b_, v, stage.staging_target_path()).ok());
  EXPECT_EQ(*b_.mapper->MappedDevice(RbdImageRef{"replicapool", RbdImageName(id)}), "");
  EXPECT_FALSE(b_.driver->store.Load(id)->has_value());  // B's record was only its attachment
  ASSERT_TRUE(Unstage(b_, v, stage.staging_target_path()).ok());

  pool_.watched.clear();
  ASSERT_TRUE(Delete(a_, id).ok());
  EXPECT_EQ(pool_.images.count(id), 0u);
  ASSERT_TRUE(Delete(a_, id).ok());  // idempotent
}

TEST_F(RbdServiceTest, TheClusterIsThePluginsAndAnyNodeDeletes) {
  auto req = CreateReq("pvc-1", 1 << 30);
  req.mutable_parameters()->erase("monitors");  // the plugin's cluster
  pb::CreateVolumeResponse created;
  ASSERT_TRUE(a_.controller->CreateVolume(nullptr, &req, &created).ok());
  const std::string id = created.volume().volume_id();
  EXPECT_EQ(id.rfind("rbd-replicapool-", 0), 0u) << id;
  EXPECT_EQ(created.volume().volume_context().count("monitors"), 0u);
  // Asked with the monitors spelled out, it is the same volume.
  pb::CreateVolumeResponse again;
  ASSERT_TRUE(a_.controller->CreateVolume(nullptr, &(req = CreateReq("pvc-1", 1 << 30)), &again).ok());
  EXPECT_EQ(again.volume().volume_id(), id);

  auto other = CreateReq("pvc-2", 1 << 30);
  (*other.mutable_parameters())["monitors"] = "v2:192.0.2.1:3300";
  grpc::Status s = a_.controller->CreateVolume(nullptr, &other, &again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("--rbd-monitors"));
  auto long_pool = CreateReq("pvc-2", 1 << 30);
  (*long_pool.mutable_parameters())["pool"] = std::string(kMaxRbdPoolInVolumeId + 1, 'p');
  EXPECT_EQ(a_.controller->CreateVolume(nullptr, &long_pool, &again).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // A PV naming other monitors (hand-written, or from before a mon
  // failover) is mapped from the plugin's cluster, never from those.
  auto stage = StageReq(created.volume());
  (*stage.mutable_volume_context())["monitors"] = "v2:192.0.2.1:3300";
  EXPECT_EQ(Stage(b_, stage), grpc::StatusCode::OK);
  EXPECT_EQ(b_.mapper->last_cluster().mon_host, kMons);
  EXPECT_EQ(made_.back().mon_host, kMons);
  ASSERT_TRUE(Unstage(b_, created.volume(), stage.staging_target_path()).ok());

  // Node B's provisioner has no record and deletes the image from the id.
  ASSERT_TRUE(Delete(b_, id).ok());
  EXPECT_EQ(pool_.images.count(id), 0u);
  ASSERT_TRUE(Delete(b_, id).ok());
  ASSERT_TRUE(Delete(a_, id).ok());  // A's record goes too (its image is gone)
  EXPECT_FALSE(a_.driver->store.Load(id)->has_value());
  EXPECT_TRUE(Delete(b_, "cv-0123").ok());  // not an RBD id: nothing to find
}

TEST_F(RbdServiceTest, UnstageUnmapsAnImageThatNoRecordSaysIsStaged) {
  auto req = CreateReq("pvc-1", 1 << 30);
  pb::CreateVolumeResponse created;
  ASSERT_TRUE(a_.controller->CreateVolume(nullptr, &req, &created).ok());
  const std::string id = created.volume().volume_id();
  // Mapped, then the plugin died before its record said so.
  const RbdImageRef ref{"replicapool", RbdImageName(id)};
  ASSERT_TRUE(b_.mapper->Map(RbdOptions{}, ref).ok());
  ASSERT_TRUE(Unstage(b_, created.volume(), Staging(id)).ok());
  EXPECT_EQ(*b_.mapper->MappedDevice(ref), "");
  // Node A's record says it is not staged either; same there.
  ASSERT_TRUE(a_.mapper->Map(RbdOptions{}, ref).ok());
  ASSERT_TRUE(Unstage(a_, created.volume(), Staging(id)).ok());
  EXPECT_EQ(*a_.mapper->MappedDevice(ref), "");
  EXPECT_TRUE(a_.driver->store.Load(id)->has_value());  // the controller's record stays
}

TEST_F(RbdServiceTest, AStateDirOfTheOtherBackendIsRefusedAtStart) {
  auto req = CreateReq("pvc-1", 1 << 30);
  pb::CreateVolumeResponse created;
  ASSERT_TRUE(a_.controller->CreateVolume(nullptr, &req, &created).ok());
  DriverConfig c = a_.driver->config;
  Driver sparse(c, NewSparseFileBackend(tmp_.path() + "/sparse"));
  Status s = sparse.Init();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("belongs to backend \"rbd\"")));
}

TEST_F(RbdServiceTest, CreateRetriedOnANodeThatStagedTheVolumeAnswersTheSameVolume) {
  auto req = CreateReq("pvc-1", 1 << 30);
  pb::CreateVolumeResponse created;
  ASSERT_TRUE(a_.controller->CreateVolume(nullptr, &req, &created).ok());
  ASSERT_EQ(Stage(b_, StageReq(created.volume())), grpc::StatusCode::OK);
  pb::CreateVolumeResponse again;
  grpc::Status s = b_.controller->CreateVolume(nullptr, &req, &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.volume().volume_id(), created.volume().volume_id());
  EXPECT_TRUE((*b_.driver->store.Load(created.volume().volume_id()))->staged.has_value());  // stage kept
}

TEST_F(RbdServiceTest, StageAfterANodeRebootMapsAgainAndRewritesTheDescriptor) {
  auto req = CreateReq("pvc-1", 1 << 30);
  pb::CreateVolumeResponse created;
  ASSERT_TRUE(a_.controller->CreateVolume(nullptr, &req, &created).ok());
  const pb::Volume& v = created.volume();
  auto stage = StageReq(v);
  ASSERT_EQ(Stage(a_, stage), grpc::StatusCode::OK);
  auto pub = PublishReq(v);
  ASSERT_TRUE(Publish(a_, pub).ok());
  EXPECT_EQ((*a_.driver->mount_info.Read(pub.target_path()))->device, "/dev/rbd0");

  // The node reboots: mappings are gone; kubelet stages again.
  a_.mapper->Reboot();
  a_ = MakeNode("node-a", std::nullopt);
  a_.mapper->FailNext(absl::UnavailableError("the Ceph cluster did not answer"));
  EXPECT_EQ(Stage(a_, stage), grpc::StatusCode::UNAVAILABLE);
  auto* mapper = a_.mapper;
  (void)mapper->Map(RbdOptions{}, RbdImageRef{"other", "x"});  // another image takes /dev/rbd0
  ASSERT_EQ(Stage(a_, stage), grpc::StatusCode::OK);
  EXPECT_EQ((*a_.driver->mount_info.Read(pub.target_path()))->device, "/dev/rbd1");
  auto rec = a_.driver->store.Load(v.volume_id());
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->staged->device, "/dev/rbd1");
  EXPECT_FALSE((*rec)->attached_only);  // A created it: its record stays the controller's
}

TEST_F(RbdServiceTest, ARestartedPluginWithItsOwnCredentialsMapsWhatWasStaged) {
  Node c = MakeNode("node-c", RbdCredentials{"cocostorage", kPluginKey});
  auto req = CreateReq("pvc-1", 1 << 30);
  pb::CreateVolumeResponse created;
  ASSERT_TRUE(c.controller->CreateVolume(nullptr, &req, &created).ok());
  const std::string id = created.volume().volume_id();
  ASSERT_EQ(Stage(c, StageReq(created.volume())), grpc::StatusCode::OK);
  auto pub = PublishReq(created.volume());
  ASSERT_TRUE(Publish(c, pub).ok());
  // The node reboots (a fresh mapper: nothing mapped) and the plugin starts:
  // it maps what was staged, with its own user.
  c = MakeNode("node-c", RbdCredentials{"cocostorage", kPluginKey});
  EXPECT_EQ(c.mapper->map_calls(), 0);  // not in Init: once serving (main.cc's thread)
  c.driver->RemapStagedVolumes();
  EXPECT_EQ(c.mapper->map_calls(), 1);
  const RbdImageRef ref{"replicapool", RbdImageName(id)};
  EXPECT_EQ(*c.mapper->MappedDevice(ref), "/dev/rbd0");
  EXPECT_EQ(c.mapper->last_cluster().user, "cocostorage");
  EXPECT_EQ((*c.driver->store.Load(id))->staged->device, "/dev/rbd0");
  EXPECT_EQ((*c.driver->mount_info.Read(pub.target_path()))->device, "/dev/rbd0");
  // Without credentials of its own it leaves that to kubelet's next stage.
  Node d = MakeNode("node-c", std::nullopt);
  d.driver->RemapStagedVolumes();
  EXPECT_EQ(d.mapper->map_calls(), 0);
  EXPECT_EQ(*d.mapper->MappedDevice(ref), "");
}

TEST_F(RbdServiceTest, StageWithoutSecretsUsesThePluginsOwnCredentialsOrSaysWhy) {
  auto req = CreateReq("pvc-1", 1 << 30);
  pb::CreateVolumeResponse created;
  ASSERT_TRUE(a_.controller->CreateVolume(nullptr, &req, &created).ok());
  auto stage = StageReq(created.volume());
  stage.clear_secrets();
  grpc::Status s;
  pb::NodeStageVolumeResponse resp;
  s = b_.node->NodeStageVolume(nullptr, &stage, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("secret-name"));
  Node c = MakeNode("node-c", RbdCredentials{"cocostorage", kPluginKey});
  ASSERT_EQ(Stage(c, stage), grpc::StatusCode::OK);
  EXPECT_EQ(c.mapper->last_cluster().user, "cocostorage");
}

TEST_F(RbdServiceTest, CapacityIsThePoolsWithThePluginsCredentials) {
  pb::GetCapacityRequest req;
  (*req.mutable_parameters())["monitors"] = kMons;
  (*req.mutable_parameters())["pool"] = "replicapool";
  pb::GetCapacityResponse resp;
  grpc::Status s = a_.controller->GetCapacity(nullptr, &req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);  // no secrets in GetCapacity, none of its own
  Node c = MakeNode("node-c", RbdCredentials{"cocostorage", kPluginKey});
  s = c.controller->GetCapacity(nullptr, &req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.available_capacity(), int64_t{7} << 40);
  EXPECT_EQ(made_.back().user, "cocostorage");
  // No parameters: no pool to speak of.
  pb::GetCapacityRequest bare;
  ASSERT_TRUE(c.controller->GetCapacity(nullptr, &bare, &resp).ok());
  EXPECT_EQ(resp.available_capacity(), 0);
}

TEST_F(RbdServiceTest, ExpandResizesTheImageWithTheRequestsSecrets) {
  auto req = CreateReq("pvc-1", 1 << 30);
  pb::CreateVolumeResponse created;
  ASSERT_TRUE(a_.controller->CreateVolume(nullptr, &req, &created).ok());
  pb::ControllerExpandVolumeRequest ex;
  ex.set_volume_id(created.volume().volume_id());
  ex.mutable_capacity_range()->set_required_bytes(int64_t{2} << 30);
  pb::ControllerExpandVolumeResponse resp;
  EXPECT_EQ(a_.controller->ControllerExpandVolume(nullptr, &ex, &resp).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);  // no secrets, none of its own
  (*ex.mutable_secrets())["userID"] = "csi-rbd-provisioner";
  (*ex.mutable_secrets())["userKey"] = kProvisionerKey;
  grpc::Status s = a_.controller->ControllerExpandVolume(nullptr, &ex, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.capacity_bytes(), int64_t{2} << 30);
  EXPECT_EQ(pool_.images.at(created.volume().volume_id()), int64_t{2} << 30);
}

TEST(RbdClusterBackendTest, KeepsABoundedSetOfConnections) {
  int made = 0;
  auto b =
      NewRbdClusterBackend(kMons, std::nullopt, std::chrono::seconds(3), [&](RbdOptions) -> StatusOr<VolumeBackendPtr> {
        ++made;
        static FakePool pool;
        return VolumeBackendPtr(std::make_unique<FakePoolBackend>(&pool));
      });
  EXPECT_TRUE(b->ClusterWide());
  EXPECT_TRUE(b->Check().ok());
  EXPECT_THAT(b->Create("x", 1).status(), StatusIs(absl::StatusCode::kFailedPrecondition));
  VolumeParams p;
  p.rbd_monitors = kMons;
  std::vector<VolumeBackendRef> held;
  for (size_t i = 0; i < kMaxRbdConnections + 4; ++i) {
    p.rbd_pool = Cat("pool", i);
    auto r = b->Scoped(p, {{"userID", "u"}, {"userKey", "k"}});
    ASSERT_TRUE(r.ok()) << r.status();
    held.push_back(*r);
  }
  EXPECT_EQ(made, static_cast<int>(kMaxRbdConnections + 4));
  p.rbd_pool = "pool19";
  ASSERT_TRUE(b->Scoped(p, {{"userID", "u"}, {"userKey", "k"}}).ok());
  EXPECT_EQ(made, static_cast<int>(kMaxRbdConnections + 4));  // still cached
  p.rbd_pool = "pool0";
  ASSERT_TRUE(b->Scoped(p, {{"userID", "u"}, {"userKey", "k"}}).ok());
  EXPECT_EQ(made, static_cast<int>(kMaxRbdConnections + 5));  // dropped, reopened
  p.rbd_pool = "pool19";
  ASSERT_TRUE(b->Scoped(p, {{"userID", "u"}, {"userKey", "other"}}).ok());
  EXPECT_EQ(made, static_cast<int>(kMaxRbdConnections + 6));  // another key, another connection
  EXPECT_THAT(b->Scoped(VolumeParams{}, {}).status(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RbdParamsTest, VolumeIdsNameTheirPool) {
  const std::string id = RbdVolumeIdForName("replica-pool.2", "pvc-1");
  EXPECT_EQ(id, "rbd-replica-pool.2-" + VolumeIdForName("pvc-1").substr(3));
  EXPECT_TRUE(ValidateVolumeId(id).ok());
  EXPECT_EQ(RbdPoolOfVolumeId(id), "replica-pool.2");
  EXPECT_TRUE(ValidateVolumeId(RbdVolumeIdForName(std::string(kMaxRbdPoolInVolumeId, 'p'), "x")).ok());
  for (const std::string& bad :
       {VolumeIdForName("pvc-1"), std::string("rbd-"), "rbd-p-" + std::string(39, 'a'), "rbd-p-" + std::string(40, 'A'),
        "rbd-" + std::string(41, 'a'), "rbd-a/b-" + std::string(40, 'a'), std::string("csi-0123")}) {
    EXPECT_EQ(RbdPoolOfVolumeId(bad), "") << bad;
  }
}

TEST(RbdParamsTest, MonitorsAndPoolGoTogetherAndAreChecked) {
  auto ok = ParseVolumeParams({{"monitors", kMons}, {"pool", "replicapool"}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->IsRbd());
  EXPECT_EQ(ok->ToMap().at("pool"), "replicapool");
  auto back = ParseVolumeParams(ok->ToMap());
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(*back == *ok);

  EXPECT_TRUE(ParseVolumeParams({{"pool", "replicapool"}}).ok());  // the plugin's monitors
  EXPECT_THAT(ParseVolumeParams({{"monitors", kMons}}), StatusIs(absl::StatusCode::kInvalidArgument));
  for (const char* pool : {"", "a/b", "-x", ".x", "a b", "a@s"}) {
    EXPECT_THAT(ParseVolumeParams({{"monitors", kMons}, {"pool", pool}}), StatusIs(absl::StatusCode::kInvalidArgument))
        << pool;
  }
  for (const char* mons : {"", "10.0.0.1 --key=x", "a;b", "mon\n"}) {
    EXPECT_THAT(ParseVolumeParams({{"monitors", mons}, {"pool", "p"}}), StatusIs(absl::StatusCode::kInvalidArgument))
        << mons;
  }
  EXPECT_TRUE(ParseVolumeParams({{"monitors", "[v2:[fd00::1]:3300/0,v1:[fd00::1]:6789/0]"}, {"pool", "p"}}).ok());
}

}  // namespace
}  // namespace cocostorage::csi
