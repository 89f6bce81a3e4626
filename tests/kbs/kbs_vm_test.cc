// Keys released by a KBS, end to end on a real guest kernel: the agent in
// the VM attests to the test KBS on the host (over QEMU's user network,
// 10.0.2.2 = host loopback, HTTPS with the test CA) and activates volumes
// with the released key. Every failure is distinct and leaves the disk
// untouched (checked on the host image) and nothing behind in the guest.
#include <gtest/gtest.h>

#include <fstream>
#include <future>

#include "agent_vm_support.h"
#include "cocostorage/common/base64.h"
#include "cocostorage/common/strings.h"
#include "test_kbs_process.h"

namespace cocostorage::vmtest {
namespace {

using ::cocostorage::testing::TestKbsProcess;
using nlohmann::json;

constexpr uint64_t MiB = 1ull << 20;
constexpr char kKeyHex[] =
    "8f1c2ab06d3e4f5a697b8c9dae0f1021324354657687a9babcddeef001122334"
    "455667788990aabbccddeeff00112233445566778899aabbccddeeff00112233"
    "9988776655443322110ffeeddccbbaa99887766554433221100ffeeddccbbaa9";

json Config() {
  return {{"resources",
           {{"default/keys/pv-fs", {{"hex", kKeyHex}}},
            {"default/keys/pv-blk", {{"hex", kKeyHex}}},
            {"default/keys/pv-2", {{"hex", kKeyHex}}},
            {"default/keys/pv-3", {{"hex", kKeyHex}}},
            {"default/keys/short", {{"hex", "0011223344556677"}}},
            {"default/locked/pv", {{"hex", kKeyHex}}}}},
          {"allowed_tees", {"sample"}},
          {"policy", {{"default", "allow"}, {"rules", {{{"resource", "default/locked/*"}, {"allow", false}}}}}}};
}

class KbsVmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("coco-kbs-vm"));
    kbs_ = new TestKbsProcess(*dir_, {"10.0.2.2", "127.0.0.1"});
    ASSERT_TRUE(kbs_->Start(Config(), 0));
    GuestVmOptions opts;
    opts.memory_mib = 2048;
    opts.root_ports = 16;
    auto vm = GuestVm::Start(opts);
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_ = vm->release();
    ASSERT_TRUE(vm_->WaitAgentListening().ok()) << vm_->ConsoleTail();
    // The CA bundle goes into the guest, then the agent restarts as a KBS client.
    auto ca = ReadFileToString(kbs_->ca_bundle());
    ASSERT_TRUE(ca.ok());
    ASSERT_TRUE(
        vm_->ExecOk(Cat("mkdir -p /run/kbs && echo ", Base64Encode(*ca), " | base64 -d > /run/kbs/ca.pem")).ok());
    ASSERT_TRUE(vm_->StopAgent().ok());
    ASSERT_TRUE(vm_->SetAgentCommandLine({"--listen=tcp://0.0.0.0:7001", Cat("--storage-root=", kStorageRoot),
                                          "--state-dir=/run/cocostorage", "--key-provider=kbs",
                                          Cat("--kbs-url=", kbs_->url("10.0.2.2")), "--kbs-ca-bundle=/run/kbs/ca.pem",
                                          "--attester=sample", "--insecure-test-build", "--insecure-no-storage-policy"},
                                         {})
                    .ok());
    ASSERT_TRUE(vm_->StartAgent().ok());
    ASSERT_TRUE(vm_->WaitAgentListening().ok()) << vm_->AgentLog().value_or("");
    agent_ = new AgentClient(vm_->AgentTarget());
  }

  static void TearDownTestSuite() {
    delete agent_;
    delete vm_;
    delete kbs_;
    if (dir_) rmdir(dir_->c_str());
    delete dir_;
  }

  void TearDown() override {
    if (HasFailure() && vm_ != nullptr) {
      std::cerr << AgentLogTail(vm_);
    }
  }

  std::string Plug(const std::string& name, uint64_t bytes) {
    images_.push_back(std::make_unique<SparseImage>(*dir_, name, bytes));
    auto pci = vm_->Hotplug(images_.back()->path(), name, name);
    EXPECT_TRUE(pci.ok()) << pci.status();
    return pci.ok() ? *pci : "";
  }

  // The host image holds no byte but zeros (the agent never wrote to it).
  static bool Untouched(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::vector<char> buf(1 << 20);
    while (f.read(buf.data(), buf.size()) || f.gcount() > 0) {
      for (std::streamsize i = 0; i < f.gcount(); ++i)
        if (buf[i] != 0) return false;
    }
    return true;
  }

  std::string Guest(const std::string& cmd) {
    auto r = vm_->Exec(cmd, std::chrono::minutes(5), {.merge_output = true});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->out : "";
  }

  static pb::ActivateVolumeRequest WithKey(pb::ActivateVolumeRequest r, const std::string& uri) {
    r.mutable_key()->set_kbs_resource_uri(uri);
    return r;
  }

  // An activation that must fail with `code` and a message containing
  // `needle`, touching neither the disk nor the guest's mappings.
  void ExpectRefusedUntouched(const std::string& id, const std::string& uri, grpc::StatusCode code,
                              const std::string& needle) {
    const std::string pci = Plug(id, 64 * MiB);
    // No client retries: one activation, one answer.
    AgentClient once(vm_->AgentTarget(), RetryPolicy{.attempts = 1});
    grpc::Status st = once.Activate(WithKey(FsRequest(id, pci, "ext4"), uri));
    EXPECT_EQ(st.error_code(), code) << st.error_message();
    EXPECT_NE(st.error_message().find(needle), std::string::npos) << st.error_message();
    EXPECT_TRUE(Untouched(images_.back()->path())) << id;
    EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n") << Guest("dmsetup ls");
    EXPECT_TRUE(vm_->Unplug(id).ok());
  }

  static std::string* dir_;
  static TestKbsProcess* kbs_;
  static GuestVm* vm_;
  static AgentClient* agent_;
  std::vector<std::unique_ptr<SparseImage>> images_;
};

std::string* KbsVmTest::dir_ = nullptr;
TestKbsProcess* KbsVmTest::kbs_ = nullptr;
GuestVm* KbsVmTest::vm_ = nullptr;
AgentClient* KbsVmTest::agent_ = nullptr;

TEST_F(KbsVmTest, FilesystemAndBlockVolumesWithAKbsKey) {
  const int released_before = kbs_->Stats()["resource"].value("200", 0);
  const std::string fs_pci = Plug("pv-fs", 256 * MiB);
  pb::Volume vol;
  grpc::Status st = agent_->Activate(WithKey(FsRequest("pv-fs", fs_pci, "ext4"), "kbs:///default/keys/pv-fs"), &vol);
  ASSERT_TRUE(st.ok()) << st.error_message();
  const std::string target = Cat(kStorageRoot, "/pv-fs");
  EXPECT_EQ(Guest(Cat("echo confidential > ", target, "/f && sync && cat ", target, "/f")), "confidential\n");
  EXPECT_EQ(vol.key_source(), "kbs:///default/keys/pv-fs");

  const std::string blk_pci = Plug("pv-blk", 128 * MiB);
  st = agent_->Activate(WithKey(BlockRequest("pv-blk", blk_pci), "kbs:///default/keys/pv-blk"));
  ASSERT_TRUE(st.ok()) << st.error_message();
  const std::string node = Cat(kStorageRoot, "/pv-blk.blk");
  EXPECT_EQ(Guest(Cat("printf data | dd of=", node, " bs=4096 conv=sync,fsync 2>/dev/null; head -c 4 ", node)), "data");
  EXPECT_EQ(kbs_->Stats()["resource"].value("200", 0), released_before + 2);
  // The agent log names the URI, never the key.
  auto log = vm_->AgentLog();
  ASSERT_TRUE(log.ok());
  EXPECT_NE(log->find("kbs:///default/keys/pv-fs"), std::string::npos);
  EXPECT_EQ(log->find(std::string(kKeyHex).substr(0, 16)), std::string::npos);
  // The host sees ciphertext only.
  auto img = ReadFileToString(images_[0]->path(), 256 * MiB);
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(img->find("confidential"), std::string::npos);

  ASSERT_TRUE(agent_->Deactivate("pv-fs").ok());
  ASSERT_TRUE(agent_->Deactivate("pv-blk").ok());
  EXPECT_TRUE(vm_->Unplug("pv-fs").ok());
  EXPECT_TRUE(vm_->Unplug("pv-blk").ok());
}

TEST_F(KbsVmTest, EachKbsFailureIsDistinctAndTouchesNothing) {
  ExpectRefusedUntouched("pv-deny", "kbs:///default/locked/pv", grpc::StatusCode::PERMISSION_DENIED, "policy denies");
  ExpectRefusedUntouched("pv-miss", "kbs:///default/keys/absent", grpc::StatusCode::NOT_FOUND,
                         "kbs:///default/keys/absent");
  ExpectRefusedUntouched("pv-short", "kbs:///default/keys/short", grpc::StatusCode::FAILED_PRECONDITION,
                         "holds 8 bytes");
  // Attestation refused: the KBS no longer accepts this TEE.
  json c = Config();
  c["allowed_tees"] = json::array({"snp"});
  ASSERT_NE(kbs_->Admin("POST", "/_test/config", c), "");
  ASSERT_NE(kbs_->Admin("POST", "/_test/expire-sessions"), "");
  ExpectRefusedUntouched("pv-att", "kbs:///default/keys/pv-2", grpc::StatusCode::PERMISSION_DENIED,
                         "refused the auth request");
  // Wrong init-data: the policy wants a digest this VM's (absent) init-data lacks.
  c = Config();
  c["policy"]["rules"].push_back(
      json{{"resource", "default/keys/*"}, {"allow", true}, {"require_init_data_digest", std::string(64, 'a')}});
  ASSERT_NE(kbs_->Admin("POST", "/_test/config", c), "");
  ExpectRefusedUntouched("pv-init", "kbs:///default/keys/pv-2", grpc::StatusCode::PERMISSION_DENIED, "policy denies");
  ASSERT_NE(kbs_->Admin("POST", "/_test/config", Config()), "");
}

TEST_F(KbsVmTest, ExpiredSessionThenRetry) {
  const std::string pci = Plug("pv-exp", 64 * MiB);
  ASSERT_NE(kbs_->Admin("POST", "/_test/expire-sessions"), "");
  const int attested = kbs_->Attested();
  grpc::Status st = agent_->Activate(WithKey(FsRequest("pv-exp", pci, "ext4"), "kbs:///default/keys/pv-3"));
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(kbs_->Attested(), attested + 1);  // one new handshake, transparently
  ASSERT_TRUE(agent_->Deactivate("pv-exp").ok());
  EXPECT_TRUE(vm_->Unplug("pv-exp").ok());
}

TEST_F(KbsVmTest, KbsDownThenUpAndDownForGood) {
  const int port = kbs_->port();
  kbs_->Stop();
  ExpectRefusedUntouched("pv-down", "kbs:///default/keys/pv-2", grpc::StatusCode::UNAVAILABLE, "10.0.2.2");
  // Down while the activation starts, up again within the retries (5 × 1 s).
  const std::string pci = Plug("pv-up", 64 * MiB);
  auto restart = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    return kbs_->Start(Config(), port);
  });
  grpc::Status st = agent_->Activate(WithKey(FsRequest("pv-up", pci, "ext4"), "kbs:///default/keys/pv-2"));
  ASSERT_TRUE(restart.get());
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(agent_->Deactivate("pv-up").ok());
  EXPECT_TRUE(vm_->Unplug("pv-up").ok());
}

}  // namespace
}  // namespace cocostorage::vmtest
