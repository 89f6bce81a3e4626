// The main job end to end, as the project's end-to-end test: the real
// cocostorage-csi binary over gRPC (playing external-provisioner and kubelet),
// the Kata runtime's part (mountInfo.json, QMP hot-plug, Storage), kata-agent's
// part (route by driver_options, PCI path -> MAJ:MIN, SecureMount over ttrpc
// with the real Go client, unmount at the end) and the real cocostorage-agent
// in the QEMU guest, which tears the volume down by itself. The same steps as
// cocostorage-demo (e2e/flow.h), with assertions at every step, plus two pods
// at once, a CSI plugin restart between publish and unpublish, and agent
// restarts while a volume is mounted. One VM and one plugin serve the suite;
// the suite's teardown shuts both down and checks nothing is left, so no test
// depends on the order they run in.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <future>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "flow.h"

namespace cocostorage::e2e {
namespace {

#define ASSERT_OK(expr)                          \
  do {                                           \
    ::absl::Status s_ = (expr);                  \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_; \
  } while (0)
#define EXPECT_OK(expr)                          \
  do {                                           \
    ::absl::Status s_ = (expr);                  \
    EXPECT_TRUE(s_.ok()) << #expr << ": " << s_; \
  } while (0)

bool Exists(const std::string& p) {
  struct stat st {};
  return lstat(p.c_str(), &st) == 0;
}

size_t Entries(const std::string& dir) {
  auto out = 0u;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    ++out;
  }
  return out;
}

class E2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    FlowOptions o;
    o.vm_memory_mib = 1536;
    auto f = Flow::Create(o);
    ASSERT_TRUE(f.ok()) << f.status();
    flow_ = f->release();
    ASSERT_OK(flow_->StartPlugin());
    std::string note;
    ASSERT_OK(flow_->Identify(&note));
    ASSERT_OK(flow_->BootVm());
    std::cerr << "VM booted in " << flow_->vm()->BootSeconds() << " s; work dir " << flow_->root() << "\n";
  }

  // After every test, whatever their order or filter: shut everything down
  // and check that nothing is left (failures here fail the suite).
  static void TearDownTestSuite() {
    if (flow_ != nullptr && flow_->vm() != nullptr) ShutdownLeavesNothing();
    delete flow_;
    flow_ = nullptr;
  }

  static void ShutdownLeavesNothing() {
    std::vector<agentpb::Volume> listed;
    EXPECT_OK(flow_->agent()->List(&listed));
    EXPECT_TRUE(listed.empty()) << listed.size() << " volumes still active";
    EXPECT_EQ(Guest("dmsetup ls 2>/dev/null | grep -c coco- || true"), "0\n");
    auto errors = flow_->NewKernelErrors();
    EXPECT_TRUE(errors.ok() && errors->empty()) << (errors.ok() ? Join(*errors, "\n") : errors.status().ToString());
    const pid_t qemu = flow_->vm()->QemuPid();
    std::string note;
    EXPECT_OK(flow_->ShutdownVm(&note));
    EXPECT_EQ(flow_->vm(), nullptr);
    EXPECT_NE(kill(qemu, 0), 0) << "QEMU still running";
    auto code = flow_->StopPlugin(SIGTERM);
    EXPECT_TRUE(code.ok() && *code == 0) << (code.ok() ? Cat("exit ", *code) : code.status().ToString());
    EXPECT_FALSE(Exists(flow_->plugin()->socket()));
    EXPECT_EQ(Entries(flow_->plugin()->backing_root()), 0u) << "backing files left";
    EXPECT_EQ(Entries(flow_->plugin()->kata_root()), 0u) << "direct-volume descriptors left";
    EXPECT_EQ(Entries(flow_->plugin()->state_dir()), 0u) << "state records left";
  }

  void SetUp() override {
    ASSERT_NE(flow_, nullptr);
    if (flow_->vm() == nullptr) GTEST_SKIP() << "the VM is gone (an earlier failure)";
  }

  void TearDown() override {
    if (flow_ == nullptr || flow_->vm() == nullptr) return;
    auto errors = flow_->NewKernelErrors();
    EXPECT_TRUE(errors.ok()) << errors.status();
    if (errors.ok()) {
      EXPECT_TRUE(errors->empty()) << "guest kernel reported integrity/I/O errors:\n" << Join(*errors, "\n");
    }
    if (HasFailure()) std::cerr << flow_->Diagnostics();
  }

  // CSI create -> stage -> publish -> read mountInfo -> hot-plug -> Storage ->
  // kata-agent's SecureMount -> the agent's GetVolume.
  static void BringUp(PodVolume& pod) {
    ASSERT_OK(flow_->CreateVolume(pod));
    ASSERT_OK(flow_->StageVolume(pod));
    ASSERT_OK(flow_->PublishVolume(pod));
    ASSERT_OK(flow_->ReadMountInfo(pod));
    ASSERT_OK(flow_->HotplugDevice(pod));
    ASSERT_OK(flow_->BuildStorage(pod));
    ASSERT_OK(flow_->KataAgentResolve(pod));
    ASSERT_OK(flow_->KataAgentSecureMount(pod));
    ASSERT_OK(flow_->VerifyAgentVolume(pod));
  }

  // Block volumes, which kata-agent refuses: the agent's own API.
  static void BringUpViaAgentApi(PodVolume& pod) {
    ASSERT_OK(flow_->CreateVolume(pod));
    ASSERT_OK(flow_->StageVolume(pod));
    ASSERT_OK(flow_->PublishVolume(pod));
    ASSERT_OK(flow_->ReadMountInfo(pod));
    ASSERT_OK(flow_->HotplugDevice(pod));
    ASSERT_OK(flow_->MapToAgentRequest(pod));
    ASSERT_OK(flow_->Activate(pod));
  }

  // The reverse (kata-agent's unmount and the agent's own cleanup, or
  // DeactivateVolume), then the leak check.
  static void TearDownPod(PodVolume& pod) {
    if (pod.secure_mount.device_id.empty()) {
      ASSERT_OK(flow_->Deactivate(pod));
    } else {
      ASSERT_OK(flow_->KataAgentUnmount(pod));
      ASSERT_OK(flow_->WaitForAgentCleanup(pod));
    }
    ASSERT_OK(flow_->UnplugDevice(pod));
    ASSERT_OK(flow_->UnpublishVolume(pod));
    ASSERT_OK(flow_->UnstageVolume(pod));
    ASSERT_OK(flow_->DeleteVolume(pod));
    ASSERT_OK(flow_->CheckNothingLeaked(pod));
  }

  static std::string Guest(const std::string& cmd) {
    auto r = flow_->Guest(cmd);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : "";
  }

  static Flow* flow_;
};

Flow* E2eTest::flow_ = nullptr;

// The example pod's 10G generic ephemeral volume through the whole stack and
// back, checking what every layer hands to the next.
TEST_F(E2eTest, MainFlowExamplePod) {
  PodVolume pod = flow_->NewPod("cocostorage-ephemeral-demo", 10'000'000'000ull);

  // external-provisioner: CreateVolume.
  ASSERT_OK(flow_->CreateVolume(pod));
  EXPECT_EQ(pod.volume_id.substr(0, 3), "cv-");
  EXPECT_EQ(pod.volume_context.at("keySource"), "ephemeral");
  const std::string backing = Cat(flow_->plugin()->backing_root(), "/", pod.volume_id, ".img");
  struct stat st {};
  ASSERT_EQ(stat(backing.c_str(), &st), 0) << backing;
  EXPECT_GE(static_cast<uint64_t>(st.st_size), pod.size_bytes);
  EXPECT_EQ(st.st_blocks, 0) << "the backing file must be sparse";
  ASSERT_OK(flow_->CreateVolume(pod));  // the provisioner's retry: same volume
  EXPECT_EQ(pod.volume_id.substr(0, 3), "cv-");

  // kubelet: stage and publish (twice each: kubelet retries).
  ASSERT_OK(flow_->StageVolume(pod));
  ASSERT_OK(flow_->StageVolume(pod));
  ASSERT_OK(flow_->PublishVolume(pod));
  ASSERT_TRUE(Exists(pod.target_path));
  ASSERT_OK(flow_->PublishVolume(pod));

  // Kata runtime: the descriptor.
  ASSERT_OK(flow_->ReadMountInfo(pod));
  EXPECT_EQ(pod.mount_info.volume_type, "blk");
  EXPECT_EQ(pod.mount_info.device, backing);
  EXPECT_EQ(pod.mount_info.fs_type, "ext4");
  EXPECT_EQ(pod.mount_info.metadata["encryptionKey"], "ephemeral");
  EXPECT_EQ(pod.mount_info.metadata["createFilesystem"], "true");
  EXPECT_EQ(pod.mount_info.metadata["cocostorage.dev/kind"], "ephemeral");
  EXPECT_EQ(pod.mount_info.metadata["fsGroup"], "1000");
  EXPECT_EQ(pod.mount_info.metadata["cocostorage.dev/integrity"], "hmac-sha256");
  EXPECT_EQ(pod.mount_info.metadata["cocostorage.dev/volumeMode"], "filesystem");
  EXPECT_EQ(pod.mount_info.metadata["cocostorage.dev/volumeId"], pod.volume_id);
  for (const auto& [k, v] : pod.mount_info.metadata) {
    EXPECT_EQ(v.find("csi.storage.k8s.io"), std::string::npos) << k;  // pod info is not forwarded
  }

  // Hot-plug and the runtime's Storage.
  ASSERT_OK(flow_->HotplugDevice(pod));
  EXPECT_EQ(pod.pci_path, "02/00");
  ASSERT_OK(flow_->BuildStorage(pod));
  EXPECT_EQ(pod.storage.driver, "blk");
  EXPECT_EQ(pod.storage.source, "02/00");
  EXPECT_EQ(pod.storage.mount_point, "/run/kata-containers/sandbox/storage/MDIvMDA=");
  ASSERT_GE(pod.storage.driver_options.size(), 2u);
  EXPECT_EQ(pod.storage.driver_options[0], "encryption_key=ephemeral");
  EXPECT_EQ(pod.storage.driver_options[1], "create_filesystem");

  // kata-agent: the route, the disk's MAJ:MIN from sysfs, its exact request.
  ASSERT_OK(flow_->KataAgentResolve(pod));
  const std::string disk = Guest(Cat("grep -l '^", pod.serial, "$' /sys/block/vd*/serial | cut -d/ -f4"));
  ASSERT_FALSE(disk.empty());
  EXPECT_EQ(Cat(pod.dev_number, "\n"), Guest(Cat("cat /sys/block/", TrimWhitespace(disk), "/dev")))
      << "kata-agent's sysfs walk found another disk";
  EXPECT_EQ(pod.secure_mount.volume_type, "block-device");
  EXPECT_EQ(pod.secure_mount.mount_point, pod.storage.mount_point);
  const std::map<std::string, std::string> want_options = {{"deviceId", pod.dev_number},
                                                           {"sourceType", "empty"},
                                                           {"targetType", "fileSystem"},
                                                           {"filesystemType", "ext4"},
                                                           {"mkfsOpts", "-O ^has_journal -m 0 -i 163840 -I 128"},
                                                           {"encryptionType", "luks2"},
                                                           {"dataIntegrity", "true"}};
  EXPECT_EQ(pod.secure_mount.Options(), want_options);
  EXPECT_EQ(pod.agent_volume_id, "sm-MDIvMDA");

  // The call, then the agent's view of it.
  ASSERT_OK(flow_->KataAgentSecureMount(pod));
  ASSERT_OK(flow_->VerifyAgentVolume(pod));
  const agentpb::Volume& v = pod.volume;
  EXPECT_EQ(v.volume_id(), "sm-MDIvMDA");
  EXPECT_EQ(v.state(), agentpb::VOLUME_STATE_ACTIVE);
  EXPECT_EQ(v.device().dev_number(), pod.dev_number);
  EXPECT_EQ(v.device_path(), Cat("/dev/", TrimWhitespace(disk)));
  EXPECT_EQ(v.target_path(), pod.storage.mount_point);
  EXPECT_EQ(v.cipher(), "aes-xts-plain64");
  EXPECT_EQ(v.integrity_algorithm(), "hmac(sha256)");
  EXPECT_TRUE(v.integrity_enabled());
  EXPECT_EQ(v.fs_type(), "ext4");
  EXPECT_EQ(v.key_source(), "ephemeral");
  EXPECT_GT(v.capacity_bytes(), 8 * kGiB);
  EXPECT_LT(v.provisioning_bytes_written(), 256 * kMiB) << "provisioning must not be linear in the size";
  // The same call again (same mount point, same disk): OK, nothing remapped.
  ASSERT_OK(flow_->KataAgentSecureMount(pod));
  agentpb::Volume again;
  ASSERT_OK(flow_->agent()->Get(pod.agent_volume_id, &again));
  EXPECT_EQ(again.mapped_device(), v.mapped_device());
  EXPECT_EQ(Guest(Cat("grep ' ", v.target_path(), " ' /proc/mounts | cut -d' ' -f3")), "ext4\n");
  EXPECT_EQ(Guest(Cat("grep -c ' ", v.target_path(), " ' /proc/mounts")), "1\n") << "mounted twice";
  // Mounted from the agent's top mapping (by device number: no udev names in the guest).
  std::string numbers = Guest(
      Cat("stat -L -c '%t:%T' $(grep ' ", v.target_path(), " ' /proc/mounts | cut -d' ' -f1) ", v.mapped_device()));
  auto nl = numbers.find('\n');
  ASSERT_NE(nl, std::string::npos) << numbers;
  EXPECT_EQ(numbers.substr(0, nl + 1), numbers.substr(nl + 1)) << numbers;
  EXPECT_EQ(Guest(Cat("stat -c '%g' ", v.target_path())), "1000\n");  // kata-agent's fsGroup step
  EXPECT_NE(Guest("dmsetup ls").find("coco-sm-MDIvMDA"), std::string::npos) << Guest("dmsetup ls");

  // Data: written and read back after dropping caches; the host sees none of it.
  auto before = BlockHashes(backing);
  const std::string secret = "COCO-E2E-SECRET-8d1c6f0e-MUST-NOT-LEAK";
  ASSERT_OK(flow_->WriteAndReadBackSecret(pod, secret, 20000));
  auto host = InspectBackingFile(backing, secret);
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_FALSE(host->secret_found) << "plaintext in the host's backing file";
  EXPECT_FALSE(host->luks_magic_found) << "a LUKS header reached the host";
  EXPECT_GT(host->data_blocks, 100u) << "nothing reached the backing file";
  EXPECT_LT(host->allocated_bytes, 512 * kMiB);

  // CSI stats see the allocation (host view: ciphertext + metadata).
  csipb::NodeGetVolumeStatsRequest sreq;
  sreq.set_volume_id(pod.volume_id);
  sreq.set_volume_path(pod.target_path);
  csipb::NodeGetVolumeStatsResponse stats;
  grpc::ClientContext sctx;
  ASSERT_TRUE(flow_->plugin()->node().NodeGetVolumeStats(&sctx, sreq, &stats).ok());
  ASSERT_EQ(stats.usage_size(), 1);
  EXPECT_GT(stats.usage(0).used(), 0);
  EXPECT_FALSE(stats.volume_condition().abnormal());

  // Tampering: EIO and an integrity error, never altered data.
  std::string note;
  ASSERT_OK(flow_->TamperAndExpectEio(pod, before, &note));
  std::cerr << "tamper: " << note << "\n";

  // Teardown: kata-agent only unmounts; the agent closes the rest by itself.
  ASSERT_OK(flow_->KataAgentUnmount(pod));
  double cleanup = 0;
  ASSERT_OK(flow_->WaitForAgentCleanup(pod, std::chrono::seconds(60), &cleanup));
  std::cerr << "agent cleaned up " << cleanup << " s after the unmount\n";
  (void)flow_->NewKernelErrors();  // the teardown may touch tampered blocks: still this scenario's errors
  EXPECT_EQ(Guest(Cat("test -e '", pod.storage.mount_point, "' && echo left || true")), "");
  // Then the CSI side, each step retried once (idempotent).
  bool was_active = true;
  ASSERT_OK(flow_->agent()->Deactivate(pod.agent_volume_id, &was_active));
  EXPECT_FALSE(was_active);
  agentpb::Volume gone;
  EXPECT_EQ(flow_->agent()->Get(pod.agent_volume_id, &gone).code(), absl::StatusCode::kNotFound);
  ASSERT_OK(flow_->UnplugDevice(pod));
  ASSERT_OK(flow_->UnpublishVolume(pod));
  ASSERT_OK(flow_->UnpublishVolume(pod));
  EXPECT_FALSE(Exists(pod.mount_info_dir));
  ASSERT_OK(flow_->UnstageVolume(pod));
  ASSERT_OK(flow_->UnstageVolume(pod));
  ASSERT_OK(flow_->DeleteVolume(pod));
  ASSERT_OK(flow_->DeleteVolume(pod));
  ASSERT_OK(flow_->CheckNothingLeaked(pod));
}

// Two pods at once: both volumes go through CSI and the agent concurrently,
// each sees only its own data, and the host sees neither.
TEST_F(E2eTest, TwoPodsAtOnce) {
  PodVolume pods[2] = {flow_->NewPod("pod-a", 256 * kMiB), flow_->NewPod("pod-b", 320 * kMiB)};
  auto csi_up = [](PodVolume* p) -> Status {
    COCO_RETURN_IF_ERROR(flow_->CreateVolume(*p));
    COCO_RETURN_IF_ERROR(flow_->StageVolume(*p));
    COCO_RETURN_IF_ERROR(flow_->PublishVolume(*p));
    return flow_->ReadMountInfo(*p);
  };
  auto a = std::async(std::launch::async, csi_up, &pods[0]);
  auto b = std::async(std::launch::async, csi_up, &pods[1]);
  ASSERT_OK(a.get());
  ASSERT_OK(b.get());
  ASSERT_NE(pods[0].volume_id, pods[1].volume_id);
  ASSERT_NE(pods[0].mount_info.device, pods[1].mount_info.device);

  auto plug_up = [](PodVolume* p) -> Status {
    COCO_RETURN_IF_ERROR(flow_->HotplugDevice(*p));
    COCO_RETURN_IF_ERROR(flow_->BuildStorage(*p));
    COCO_RETURN_IF_ERROR(flow_->KataAgentResolve(*p));
    COCO_RETURN_IF_ERROR(flow_->KataAgentSecureMount(*p));
    return flow_->VerifyAgentVolume(*p);
  };
  a = std::async(std::launch::async, plug_up, &pods[0]);
  b = std::async(std::launch::async, plug_up, &pods[1]);
  ASSERT_OK(a.get());
  ASSERT_OK(b.get());
  ASSERT_NE(pods[0].pci_path, pods[1].pci_path);
  ASSERT_NE(pods[0].dev_number, pods[1].dev_number);
  ASSERT_NE(pods[0].agent_volume_id, pods[1].agent_volume_id);
  ASSERT_NE(pods[0].volume.target_path(), pods[1].volume.target_path());
  std::vector<agentpb::Volume> listed;
  ASSERT_OK(flow_->agent()->List(&listed));
  EXPECT_EQ(listed.size(), 2u);

  const std::string secrets[2] = {"COCO-E2E-POD-A-SECRET-51a0", "COCO-E2E-POD-B-SECRET-7e22"};
  auto write = [&](int i) { return flow_->WriteAndReadBackSecret(pods[i], secrets[i], 3000); };
  a = std::async(std::launch::async, write, 0);
  b = std::async(std::launch::async, write, 1);
  ASSERT_OK(a.get());
  ASSERT_OK(b.get());
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(Guest(Cat("grep -c ", secrets[1 - i], " ", pods[i].volume.target_path(), "/secret.txt || true")), "0\n");
    for (int j = 0; j < 2; ++j) {
      EXPECT_FALSE(FileContains(pods[i].mount_info.device, secrets[j])) << "pod " << i << " file holds secret " << j;
    }
  }
  EXPECT_NE(pods[0].volume.capacity_bytes(), pods[1].volume.capacity_bytes());

  auto down = [](PodVolume* p) -> Status {
    COCO_RETURN_IF_ERROR(flow_->KataAgentUnmount(*p));
    COCO_RETURN_IF_ERROR(flow_->WaitForAgentCleanup(*p));
    COCO_RETURN_IF_ERROR(flow_->UnplugDevice(*p));
    COCO_RETURN_IF_ERROR(flow_->UnpublishVolume(*p));
    COCO_RETURN_IF_ERROR(flow_->UnstageVolume(*p));
    return flow_->DeleteVolume(*p);
  };
  a = std::async(std::launch::async, down, &pods[0]);
  b = std::async(std::launch::async, down, &pods[1]);
  ASSERT_OK(a.get());
  ASSERT_OK(b.get());
  ASSERT_OK(flow_->CheckNothingLeaked(pods[0]));
  ASSERT_OK(flow_->CheckNothingLeaked(pods[1]));
}

// The CSI plugin restarted (SIGTERM, start again on the same dirs) between
// NodePublish and NodeUnpublish: it answers the same, the descriptor is
// unchanged, the pod's data is untouched, and teardown works.
TEST_F(E2eTest, CsiPluginRestartBetweenPublishAndUnpublish) {
  PodVolume pod = flow_->NewPod("pod-restart-csi", 256 * kMiB);
  ASSERT_NO_FATAL_FAILURE(BringUp(pod));
  ASSERT_OK(flow_->WriteAndReadBackSecret(pod, "COCO-E2E-CSI-RESTART-3b9f", 2000));
  const std::string descriptor = pod.mount_info_json;
  const pid_t old_pid = flow_->plugin()->pid();

  ASSERT_OK(flow_->RestartPlugin());
  EXPECT_NE(flow_->plugin()->pid(), old_pid);
  std::string note;
  ASSERT_OK(flow_->Identify(&note));

  // Everything still answers correctly: the retried calls kubelet would make.
  ASSERT_OK(flow_->CreateVolume(pod));  // same name -> same volume
  ASSERT_OK(flow_->StageVolume(pod));
  ASSERT_OK(flow_->PublishVolume(pod));
  ASSERT_OK(flow_->ReadMountInfo(pod));
  EXPECT_EQ(pod.mount_info_json, descriptor) << "the descriptor changed across the restart";
  csipb::NodeGetVolumeStatsRequest sreq;
  sreq.set_volume_id(pod.volume_id);
  sreq.set_volume_path(pod.target_path);
  csipb::NodeGetVolumeStatsResponse stats;
  grpc::ClientContext sctx;
  ASSERT_TRUE(flow_->plugin()->node().NodeGetVolumeStats(&sctx, sreq, &stats).ok());
  EXPECT_FALSE(stats.volume_condition().abnormal());
  // Deleting a published volume is still refused.
  csipb::DeleteVolumeRequest dreq;
  dreq.set_volume_id(pod.volume_id);
  csipb::DeleteVolumeResponse dresp;
  grpc::ClientContext dctx;
  EXPECT_EQ(flow_->plugin()->controller().DeleteVolume(&dctx, dreq, &dresp).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  EXPECT_EQ(Guest(Cat("grep -c COCO-E2E-CSI-RESTART-3b9f ", pod.volume.target_path(), "/secret.txt")), "2000\n");
  ASSERT_NO_FATAL_FAILURE(TearDownPod(pod));
}

// The guest agent killed (SIGKILL, respawned) and restarted (SIGTERM) while a
// volume is mounted: GetVolume reports it ACTIVE, the data is intact, the
// runtime's retried ActivateVolume is OK, and teardown works.
TEST_F(E2eTest, GuestAgentRestartWhileMounted) {
  PodVolume pod = flow_->NewPod("pod-restart-agent", 256 * kMiB);
  ASSERT_NO_FATAL_FAILURE(BringUp(pod));
  const std::string mnt = pod.volume.target_path();
  ASSERT_FALSE(Guest(Cat("dd if=/dev/urandom of=", mnt, "/data.bin bs=1M count=8 2>/dev/null && sync && md5sum ", mnt,
                         "/data.bin > /tmp/agent-restart.sum && cat /tmp/agent-restart.sum"))
                   .empty());

  for (const char* how : {"SIGKILL", "restart"}) {
    SCOPED_TRACE(how);
    if (std::string(how) == "SIGKILL") {
      ASSERT_OK(flow_->vm()->KillAgent(SIGKILL));
    } else {
      ASSERT_OK(flow_->vm()->RestartAgent());
    }
    ASSERT_OK(flow_->vm()->WaitAgentListening());
    agentpb::Volume v;
    ASSERT_OK(flow_->agent()->Get(pod.agent_volume_id, &v));
    EXPECT_EQ(v.state(), agentpb::VOLUME_STATE_ACTIVE) << v.message();
    EXPECT_EQ(v.target_path(), mnt);
    EXPECT_EQ(v.mapped_device(), pod.volume.mapped_device());
    EXPECT_EQ(Guest("echo 3 > /proc/sys/vm/drop_caches; md5sum -c /tmp/agent-restart.sum"),
              Cat(mnt, "/data.bin: OK\n"));
    // kata-agent's call again on the new socket: OK, no reformat, no remap.
    ASSERT_OK(flow_->KataAgentSecureMount(pod));
    agentpb::Volume again;
    ASSERT_OK(flow_->agent()->Get(pod.agent_volume_id, &again));
    EXPECT_EQ(again.state(), agentpb::VOLUME_STATE_ACTIVE);
    EXPECT_EQ(again.mapped_device(), pod.volume.mapped_device()) << "re-activation must not reformat or remap";
  }
  EXPECT_EQ(Guest("md5sum -c /tmp/agent-restart.sum"), Cat(mnt, "/data.bin: OK\n"));
  ASSERT_NO_FATAL_FAILURE(TearDownPod(pod));
}

// A raw block PVC (volumeMode: Block): no file system; the agent's device
// node sits at the Kata mount point itself; the host still sees ciphertext.
TEST_F(E2eTest, BlockModePod) {
  PodVolume pod = flow_->NewPod("pod-block", 128 * kMiB);
  pod.block = true;
  ASSERT_NO_FATAL_FAILURE(BringUpViaAgentApi(pod));
  // kata-agent would refuse this Storage (no create_filesystem): hence the
  // agent's own API here.
  Status refused = flow_->KataAgentResolve(pod);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_NE(refused.message().find("requires create_filesystem"), std::string::npos) << refused;
  pod.secure_mount = {};
  EXPECT_EQ(pod.mount_info.metadata["cocostorage.dev/volumeMode"], "block");
  EXPECT_EQ(pod.mount_info.metadata["createFilesystem"], "false");
  EXPECT_TRUE(pod.mount_info.options.empty());
  EXPECT_EQ(pod.request.mode(), agentpb::VOLUME_MODE_BLOCK);
  EXPECT_EQ(pod.request.target_path(), pod.storage.mount_point);
  EXPECT_EQ(pod.volume.target_path(), pod.storage.mount_point);
  EXPECT_EQ(pod.volume.mode(), agentpb::VOLUME_MODE_BLOCK);
  EXPECT_EQ(Guest(Cat("test -b ", pod.storage.mount_point, " && echo block")), "block\n");
  const std::string secret = "COCO-E2E-BLOCK-SECRET-c4d2";
  ASSERT_OK(flow_->WriteAndReadBackSecret(pod, secret, 1000));
  EXPECT_FALSE(FileContains(pod.mount_info.device, secret)) << "plaintext in the host's backing file";
  // Unwritten ranges of a raw volume read as zeros (zero guard), without errors.
  EXPECT_EQ(Guest(Cat("dd if=", pod.storage.mount_point,
                      " bs=1M skip=64 count=8 iflag=direct 2>/dev/null | tr -d '\\0' | wc -c")),
            "0\n");
  ASSERT_NO_FATAL_FAILURE(TearDownPod(pod));
}

}  // namespace
}  // namespace cocostorage::e2e
