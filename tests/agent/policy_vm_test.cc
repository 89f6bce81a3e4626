// The attested storage policy on a real guest kernel (labels vm, policy):
// the agent serves kata-agent's SecureMount only as the init-data's
// cocostorage.toml declares, and every host move below is refused with the
// rule it broke, with nothing written to the disk. The TCG guest has no TEE,
// so the init-data digest is the configured one (insecure test build); the
// launch-field verifiers have their own unit tests.
#include <gtest/gtest.h>

#include "agent_vm_support.h"
#include "cocostorage/common/base64.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::vmtest {
namespace {

constexpr uint64_t MiB = 1ull << 20;
constexpr char kInitDataPath[] = "/run/confidential-containers/initdata/initdata.toml";

// What the owner declared: one ephemeral scratch volume over SecureMount.
constexpr char kPolicy[] = R"(schema = "cocostorage.dev/storage-policy"
schema_version = 1
policy_version = 7
workload = "default/policy-vm-test"

[limits]
max_ephemeral_volumes = 1

[[volume]]
id = "scratch"
kind = "ephemeral"
key = "ephemeral"
integrity = ["hmac-sha256"]
mode = "filesystem"
fs_type = "ext4"
mkfs_options = ["-O", "^has_journal", "-m", "0", "-i", "163840", "-I", "128"]
mount_options = []
min_size = "128Mi"
max_size = "1Gi"
routes = ["secure-mount"]
container_path = "/scratch"
)";

class PolicyVmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("coco-policy-vm"));
    GuestVmOptions opts;
    opts.memory_mib = 1536;
    opts.root_ports = 16;
    auto vm = GuestVm::Start(opts);
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_ = vm->release();
    ASSERT_TRUE(vm_->WaitAgentListening().ok()) << vm_->ConsoleTail();
    agent_ = new AgentClient(vm_->AgentTarget(), RetryPolicy{.attempts = 1});
    ASSERT_NO_FATAL_FAILURE(StartPolicyAgent(InitDataToml(kPolicy), Sha256Hex(InitDataToml(kPolicy))));
  }

  static void TearDownTestSuite() {
    delete agent_;
    delete vm_;
    if (dir_) rmdir(dir_->c_str());
    delete dir_;
  }

  void TearDown() override {
    if (HasFailure() && vm_ != nullptr) std::cerr << AgentLogTail(vm_);
  }

  // The agent as a production guest runs it, except for how the digest is
  // checked: `init_data` placed where kata-agent leaves it, `digest` the
  // value the TEE would hold.
  static void StartPolicyAgent(const std::string& init_data, const std::string& digest) {
    ASSERT_TRUE(vm_->StopAgent().ok());
    ASSERT_TRUE(vm_->ExecOk(Cat("mkdir -p /run/confidential-containers/initdata && echo ", Base64Encode(init_data),
                                " | base64 -d > ", kInitDataPath))
                    .ok());
    ASSERT_TRUE(vm_->SetAgentCommandLine({"--listen=tcp://0.0.0.0:7001", Cat("--storage-root=", kStorageRoot),
                                          "--state-dir=/run/cocostorage", "--policy-verifier=configured-digest",
                                          Cat("--init-data=", kInitDataPath), Cat("--init-data-digest=", digest),
                                          "--insecure-test-build"},
                                         {})
                    .ok());
    ASSERT_TRUE(vm_->StartAgent().ok());
    ASSERT_TRUE(vm_->WaitAgentListening().ok()) << AgentLogTail(vm_);
  }

  struct Disk {
    std::string serial;
    std::string dev;    // /dev/vdX
    std::string devno;  // MAJ:MIN, what kata-agent sends
  };
  Disk Plug(const std::string& serial, uint64_t bytes) {
    images_.push_back(std::make_unique<SparseImage>(*dir_, serial, bytes));
    Disk d{serial, "", ""};
    auto pci = vm_->Hotplug(images_.back()->path(), serial, serial);
    EXPECT_TRUE(pci.ok()) << pci.status();
    auto dev = vm_->WaitForDisk(serial);
    EXPECT_TRUE(dev.ok()) << dev.status();
    if (!dev.ok()) return d;
    d.dev = *dev;
    auto devno = GuestDevNumber(vm_, d.dev);
    EXPECT_TRUE(devno.ok()) << devno.status();
    d.devno = devno.value_or("");
    return d;
  }
  std::string Guest(const std::string& cmd) {
    auto r = vm_->Exec(cmd, std::chrono::minutes(3), {.merge_output = true});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->out : "";
  }
  static std::string MountPoint(const std::string& pci_like) { return SecureMountPoint(pci_like); }
  // kata-agent's SecureMount call (the Go ttrpc client in the guest image);
  // returns "ok\n" or "error: <code> <message>\n".
  std::string SecureMount(const Disk& d, const std::string& mount_point, const std::string& extra = "") {
    return Guest(Cat("coco-kata-securemount -device ", d.devno, " -mount-point ", mount_point, " ", extra));
  }
  // Sectors the guest wrote to the disk (sysfs stat field 7): 0 = untouched.
  std::string SectorsWritten(const Disk& d) {
    return Guest(Cat("awk '{print $7}' /sys/block/", d.dev.substr(d.dev.rfind('/') + 1), "/stat"));
  }
  void ExpectUntouched(const Disk& d) {
    EXPECT_EQ(SectorsWritten(d), "0\n");
    EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n") << Guest("dmsetup ls");
    EXPECT_EQ(Guest(Cat("grep -c ", kStorageRoot, " /proc/mounts || true")), "0\n");
  }
  static std::string VolumeIdFor(const std::string& pci_like) { return SecureMountVolumeId(pci_like); }

  static std::string* dir_;
  static GuestVm* vm_;
  static AgentClient* agent_;
  std::vector<std::unique_ptr<SparseImage>> images_;
};

std::string* PolicyVmTest::dir_ = nullptr;
GuestVm* PolicyVmTest::vm_ = nullptr;
AgentClient* PolicyVmTest::agent_ = nullptr;

// The declared volume, exactly as kata-agent asks for it: works end to end.
TEST_F(PolicyVmTest, ConformantSecureMountWorksAndAnInjectedSecondDiskDoesNot) {
  Disk first = Plug("conform", 256 * MiB);
  ASSERT_EQ(SecureMount(first, MountPoint("02/00")), "ok\n") << AgentLogTail(vm_);
  EXPECT_EQ(Guest(Cat("echo declared > ", MountPoint("02/00"), "/f && sync && cat ", MountPoint("02/00"), "/f")),
            "declared\n");
  // The host injects one more disk and asks for it the same way: the policy
  // declares one ephemeral volume.
  Disk injected = Plug("injected", 256 * MiB);
  std::string out = SecureMount(injected, MountPoint("03/00"));
  EXPECT_NE(out.find("error: 7 storage policy v7, rule limits.max_ephemeral_volumes"), std::string::npos) << out;
  EXPECT_EQ(SectorsWritten(injected), "0\n");
  ASSERT_TRUE(agent_->Deactivate(VolumeIdFor("02/00")).ok());
  ExpectUntouched(injected);
  EXPECT_TRUE(vm_->Unplug("injected").ok());
  EXPECT_TRUE(vm_->Unplug("conform").ok());
}

TEST_F(PolicyVmTest, IntegrityDowngradeIsRefused) {
  Disk d = Plug("downgrade", 256 * MiB);
  std::string out = SecureMount(d, MountPoint("04/00"), "-integrity false");
  EXPECT_NE(out.find("error: 7 storage policy v7, rule volume[scratch].integrity"), std::string::npos) << out;
  ExpectUntouched(d);
  EXPECT_TRUE(vm_->Unplug("downgrade").ok());
}

TEST_F(PolicyVmTest, HostileMkfsOptionsAreRefused) {
  Disk d = Plug("mkfs", 256 * MiB);
  // Options the agent itself would allow (a 5 % root reserve), not the owner's.
  std::string out = SecureMount(d, MountPoint("05/00"), "-mkfs '-O ^has_journal -m 5 -i 163840 -I 128'");
  EXPECT_NE(out.find("error: 7 storage policy v7, rule volume[scratch].mkfs_options"), std::string::npos) << out;
  // Another file system than declared.
  out = SecureMount(d, MountPoint("05/00"), "-fs xfs -mkfs ''");
  EXPECT_NE(out.find("rule volume[scratch].fs_type"), std::string::npos) << out;
  ExpectUntouched(d);
  EXPECT_TRUE(vm_->Unplug("mkfs").ok());
}

TEST_F(PolicyVmTest, ADiskOutsideTheDeclaredSizeIsRefused) {
  Disk d = Plug("toosmall", 100 * MiB);
  std::string out = SecureMount(d, MountPoint("06/00"));
  EXPECT_NE(out.find("error: 7 storage policy v7, rule volume[scratch].size: device has 100Mi"), std::string::npos)
      << out;
  ExpectUntouched(d);
  EXPECT_TRUE(vm_->Unplug("toosmall").ok());
}

// The guest-local API is a route too; this policy does not list it.
TEST_F(PolicyVmTest, ARouteThePolicyDoesNotListIsRefused) {
  Disk d = Plug("api", 256 * MiB);
  auto s = agent_->Activate(FsRequest("api", "02/00", "ext4"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_NE(s.error_message().find("rule match.no_rule"), std::string::npos) << s.error_message();
  ExpectUntouched(d);
  EXPECT_TRUE(vm_->Unplug("api").ok());
}

// Init-data the TEE did not measure (the host edited it, or it carries no
// storage policy): the agent serves nothing and says why.
TEST_F(PolicyVmTest, TamperedInitDataServesNothing) {
  Disk d = Plug("tamper", 256 * MiB);
  std::string widened = kPolicy;
  widened.replace(widened.find("max_ephemeral_volumes = 1"), 25, "max_ephemeral_volumes = 9");
  ASSERT_NO_FATAL_FAILURE(StartPolicyAgent(InitDataToml(widened), Sha256Hex(InitDataToml(kPolicy))));
  std::string out = SecureMount(d, MountPoint("07/00"));
  EXPECT_NE(out.find("error: 9 no attested storage policy"), std::string::npos) << out;
  ExpectUntouched(d);

  const std::string no_policy = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"aa.toml\" = ''\n";
  ASSERT_NO_FATAL_FAILURE(StartPolicyAgent(no_policy, Sha256Hex(no_policy)));
  out = SecureMount(d, MountPoint("07/00"));
  EXPECT_NE(out.find("error: 9 no attested storage policy"), std::string::npos) << out;
  EXPECT_NE(out.find("cocostorage.toml"), std::string::npos) << out;
  ExpectUntouched(d);

  // The measured document again: served.
  ASSERT_NO_FATAL_FAILURE(StartPolicyAgent(InitDataToml(kPolicy), Sha256Hex(InitDataToml(kPolicy))));
  ASSERT_EQ(SecureMount(d, MountPoint("07/00")), "ok\n");
  ASSERT_TRUE(agent_->Deactivate(VolumeIdFor("07/00")).ok());
  EXPECT_TRUE(vm_->Unplug("tamper").ok());
}

}  // namespace
}  // namespace cocostorage::vmtest
