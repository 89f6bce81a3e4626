// Keys released by a KBS, end to end on a real guest kernel: the agent in
// the VM attests to the test KBS on the host (over QEMU's user network,
// 10.0.2.2 = host loopback, HTTPS with the test CA) and activates volumes
// with the released key. Every failure is distinct and leaves the disk
// untouched (checked on the host image) and nothing behind in the guest.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "agent_vm_support.h"
#include "cocostorage/common/base64.h"
#include "cocostorage/common/strings.h"
#include "kbs_guest.h"
#include "test_kbs_process.h"

namespace cocostorage::vmtest {
namespace {

using ::cocostorage::testing::TestKbsProcess;
using nlohmann::json;

constexpr uint64_t MiB = 1ull << 20;
// A persistent volume's KBS resource: the 32-byte root its keys derive from.
constexpr char kKeyHex[] = "8f1c2ab06d3e4f5a697b8c9dae0f1021324354657687a9babcddeef001122334";
constexpr char kOtherKeyHex[] = "00112233445566778899aabbccddeeff0f1e2d3c4b5a69788796a5b4c3d2e1f0";

json Config() {
  return {{"resources",
           {{"default/keys/pv-fs", {{"hex", kKeyHex}}},
            {"default/keys/pv-blk", {{"hex", kKeyHex}}},
            {"default/keys/pv-2", {{"hex", kKeyHex}}},
            {"default/keys/pv-3", {{"hex", kKeyHex}}},
            {"default/keys/pv-data", {{"hex", kKeyHex}}},
            {"default/keys/pv-other", {{"hex", kOtherKeyHex}}},
            {"default/keys/short", {{"hex", "0011223344556677"}}},
            {"default/locked/pv", {{"hex", kKeyHex}}}}},
          {"allowed_tees", {"sample"}},
          {"policy", {{"default", "allow"}, {"rules", {{{"resource", "default/locked/*"}, {"allow", false}}}}}}};
}

// The host image holds no byte but zeros (the agent never wrote to it).
bool AllZeroFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> buf(1 << 20);
  while (f.read(buf.data(), buf.size()) || f.gcount() > 0) {
    for (std::streamsize i = 0; i < f.gcount(); ++i)
      if (buf[i] != 0) return false;
  }
  return true;
}

pb::ActivateVolumeRequest WithKey(pb::ActivateVolumeRequest r, const std::string& uri) {
  r.mutable_key()->set_kbs_resource_uri(uri);
  return r;
}

class KbsVmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("coco-kbs-vm"));
    kbs_ = new TestKbsProcess(*dir_, {"10.0.2.2", "127.0.0.1"});
    ASSERT_TRUE(kbs_->Start(Config(), 0));
    auto vm = BootKbsGuest(*kbs_);
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_ = vm->release();
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

  static bool Untouched(const std::string& path) { return AllZeroFile(path); }

  std::string Guest(const std::string& cmd) {
    auto r = vm_->Exec(cmd, std::chrono::minutes(5), {.merge_output = true});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->out : "";
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

// Persistent volumes (docs/design.md, "Persistent volumes"): the header on the
// disk, authenticated with keys derived from the KBS root, decides between
// create and open; data outlives the activation and the VM; every tampered,
// foreign or non-blank device is refused with its own reason and left as it
// was.
class PersistentVmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("coco-pv-vm"));
    kbs_ = new TestKbsProcess(*dir_, {"10.0.2.2", "127.0.0.1"});
    ASSERT_TRUE(kbs_->Start(Config(), 0));
    Reboot();
  }

  static void TearDownTestSuite() {
    delete agent_;
    agent_ = nullptr;
    vm_.reset();
    delete kbs_;
    if (dir_) rmdir(dir_->c_str());
    delete dir_;
  }

  // A new VM (the previous one, if any, is gone first: its disks with it).
  static void Reboot() {
    delete agent_;
    agent_ = nullptr;
    vm_.reset();
    auto vm = BootKbsGuest(*kbs_, *policy_);
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

  std::string LastAction(const std::string& id) { return LastActivationAction(vm_.get(), id); }

  std::string Sha(const std::string& path) { return Guest(Cat("sha256sum < ", path, " | cut -c1-64")); }

  // One activation refused with `code` and `needle`; the image byte for byte
  // as before, no mapping and no mount left in the guest.
  void ExpectRefused(const std::string& image, const std::string& id, const std::string& uri, grpc::StatusCode code,
                     const std::string& needle) {
    SCOPED_TRACE(Cat(id, " on ", image, ": ", needle));
    auto before = ReadFileToString(image, 256 * MiB);
    ASSERT_TRUE(before.ok());
    auto pci = vm_->Hotplug(image, "tampered", "tampered");
    ASSERT_TRUE(pci.ok()) << pci.status();
    AgentClient once(vm_->AgentTarget(), RetryPolicy{.attempts = 1});
    grpc::Status st = once.Activate(WithKey(FsRequest(id, *pci, "ext4"), uri));
    EXPECT_EQ(st.error_code(), code) << st.error_message();
    EXPECT_NE(st.error_message().find(needle), std::string::npos) << st.error_message();
    EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n") << Guest("dmsetup ls");
    EXPECT_EQ(Guest(Cat("grep -c ' ", kStorageRoot, "/' /proc/mounts || true")), "0\n");
    EXPECT_TRUE(vm_->Unplug("tampered").ok());
    auto after = ReadFileToString(image, 256 * MiB);
    ASSERT_TRUE(after.ok());
    EXPECT_TRUE(*before == *after) << "the agent changed " << image;
  }

  static void Poke(const std::string& path, uint64_t offset, const std::string& bytes) {
    std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(f.good()) << path;
  }

  static void CopyImage(const std::string& from, const std::string& to) {
    ASSERT_EQ(std::system(Cat("cp --sparse=always ", from, " ", to).c_str()), 0);
  }

  static std::string* dir_;
  static std::string* policy_;  // the init-data's storage policy; empty: none
  static TestKbsProcess* kbs_;
  static std::unique_ptr<GuestVm> vm_;
  static AgentClient* agent_;
};

std::string* PersistentVmTest::dir_ = nullptr;
std::string* PersistentVmTest::policy_ = new std::string();
TestKbsProcess* PersistentVmTest::kbs_ = nullptr;
std::unique_ptr<GuestVm> PersistentVmTest::vm_;
AgentClient* PersistentVmTest::agent_ = nullptr;

TEST_F(PersistentVmTest, DataSurvivesReopenAndANewVm) {
  SparseImage disk(*dir_, "pv-data", 256 * MiB);
  const std::string& image = disk.path();
  const std::string uri = "kbs:///default/keys/pv-data";
  const std::string target = Cat(kStorageRoot, "/pv-data");
  KernelLogCursor kernel(vm_.get());

  auto pci = vm_->Hotplug(image, "pv-data", "pv-data");
  ASSERT_TRUE(pci.ok()) << pci.status();
  grpc::Status st = agent_->Activate(WithKey(FsRequest("pv-data", *pci, "ext4"), uri));
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(LastAction("pv-data"), "create");
  Guest(Cat("head -c 33554432 /dev/urandom > ", target, "/records && echo persistent-marker > ", target,
            "/marker && sync"));
  const std::string sha = Sha(Cat(target, "/records"));
  ASSERT_EQ(sha.size(), 65u) << sha;

  // Same VM: the second activation opens what the first created.
  ASSERT_TRUE(agent_->Deactivate("pv-data").ok());
  st = agent_->Activate(WithKey(FsRequest("pv-data", *pci, "ext4"), uri));
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(LastAction("pv-data"), "open");
  EXPECT_EQ(Sha(Cat(target, "/records")), sha);
  ASSERT_TRUE(agent_->Deactivate("pv-data").ok());
  auto errors = kernel.NewErrors();
  ASSERT_TRUE(errors.ok());
  EXPECT_TRUE(errors->empty()) << Join(*errors, "\n");

  // A new VM with the same backing file and the same KBS key.
  Reboot();
  KernelLogCursor kernel2(vm_.get());
  pci = vm_->Hotplug(image, "pv-data", "pv-data");
  ASSERT_TRUE(pci.ok()) << pci.status();
  st = agent_->Activate(WithKey(FsRequest("pv-data", *pci, "ext4"), uri));
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(LastAction("pv-data"), "open");
  EXPECT_EQ(Sha(Cat(target, "/records")), sha);
  EXPECT_EQ(Guest(Cat("cat ", target, "/marker")), "persistent-marker\n");
  // The file system is consistent (checked unmounted, on the guard's volume).
  EXPECT_EQ(Guest(Cat("umount ", target, " && e2fsck -fn /dev/mapper/coco-pv-data >/dev/null 2>&1; echo $?")), "0\n");
  ASSERT_TRUE(agent_->Deactivate("pv-data").ok());
  errors = kernel2.NewErrors();
  ASSERT_TRUE(errors.ok());
  EXPECT_TRUE(errors->empty()) << Join(*errors, "\n");
  EXPECT_TRUE(vm_->Unplug("pv-data").ok());
  // The host sees ciphertext only.
  auto img = ReadFileToString(image, 256 * MiB);
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(img->find("persistent-marker"), std::string::npos);
}

TEST_F(PersistentVmTest, TamperedForeignAndNonBlankDevicesAreRefusedUntouched) {
  const std::string uri = "kbs:///default/keys/pv-data";
  SparseImage base(*dir_, "pv-t", 64 * MiB);
  {
    auto pci = vm_->Hotplug(base.path(), "pv-t", "pv-t");
    ASSERT_TRUE(pci.ok()) << pci.status();
    grpc::Status st = agent_->Activate(WithKey(FsRequest("pv-t", *pci, "ext4"), uri));
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_TRUE(agent_->Deactivate("pv-t").ok());
    ASSERT_TRUE(vm_->Unplug("pv-t").ok());
  }
  const auto FAILED_PRECONDITION = grpc::StatusCode::FAILED_PRECONDITION;
  // Swapped volumes: the disk holds pv-t, the request is for pv-u.
  ExpectRefused(base.path(), "pv-u", uri, FAILED_PRECONDITION, "foreign_volume: /dev/vd");
  // The right volume with another volume's key.
  ExpectRefused(base.path(), "pv-t", "kbs:///default/keys/pv-other", FAILED_PRECONDITION, "wrong_key");

  SparseImage copy(*dir_, "pv-t-copy", 0);
  // Both superblock slots altered (their generation): neither MAC holds.
  CopyImage(base.path(), copy.path());
  Poke(copy.path(), 0x10, "\x7f");
  Poke(copy.path(), 0x1010, "\x7f");
  ExpectRefused(copy.path(), "pv-t", uri, grpc::StatusCode::DATA_LOSS, "header_corrupt");
  // One byte of the LUKS2 header image (its JSON) changed.
  CopyImage(base.path(), copy.path());
  Poke(copy.path(), (1 * MiB) + 4096 + 16, "{");
  ExpectRefused(copy.path(), "pv-t", uri, grpc::StatusCode::DATA_LOSS, "header_corrupt");
  // Truncated: shorter than the recorded volume.
  CopyImage(base.path(), copy.path());
  ASSERT_EQ(truncate(copy.path().c_str(), static_cast<off_t>(56 * MiB)), 0);
  ExpectRefused(copy.path(), "pv-t", uri, FAILED_PRECONDITION, "device_truncated");
  // Garbage where both superblock slots should be.
  CopyImage(base.path(), copy.path());
  Poke(copy.path(), 0, "NOTOURS!");
  Poke(copy.path(), 4096, "NOTOURS!");
  ExpectRefused(copy.path(), "pv-t", uri, FAILED_PRECONDITION, "not_blank");
  // A plaintext file system on an otherwise blank disk.
  SparseImage plain(*dir_, "pv-plain", 64 * MiB);
  ASSERT_EQ(std::system(Cat("mkfs.ext4 -q -F ", plain.path(), " >/dev/null 2>&1").c_str()), 0);
  ExpectRefused(plain.path(), "pv-t", uri, FAILED_PRECONDITION, "not_blank");
  // Data only at the end of the data area (blkid sees nothing).
  SparseImage tail(*dir_, "pv-tail", 64 * MiB);
  Poke(tail.path(), 64 * MiB - 4096, "leftover");
  ExpectRefused(tail.path(), "pv-t", uri, FAILED_PRECONDITION, "not_blank");

  // One slot torn (garbage): the other, authentic one still opens the volume.
  CopyImage(base.path(), copy.path());
  Poke(copy.path(), 0, "TORNSLOT");
  {
    auto pci = vm_->Hotplug(copy.path(), "pv-torn", "pv-torn");
    ASSERT_TRUE(pci.ok()) << pci.status();
    grpc::Status st = agent_->Activate(WithKey(FsRequest("pv-t", *pci, "ext4"), uri));
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(LastAction("pv-t"), "open");
    ASSERT_TRUE(agent_->Deactivate("pv-t").ok());
    EXPECT_TRUE(vm_->Unplug("pv-torn").ok());
  }

  // After all that, the untouched original still opens as itself.
  auto pci = vm_->Hotplug(base.path(), "pv-t", "pv-t");
  ASSERT_TRUE(pci.ok()) << pci.status();
  grpc::Status st = agent_->Activate(WithKey(FsRequest("pv-t", *pci, "ext4"), uri));
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(LastAction("pv-t"), "open");
  ASSERT_TRUE(agent_->Deactivate("pv-t").ok());
  EXPECT_TRUE(vm_->Unplug("pv-t").ok());
}

TEST_F(PersistentVmTest, BlockVolumeKeepsItsBytes) {
  SparseImage disk(*dir_, "pv-blk", 64 * MiB);
  const std::string uri = "kbs:///default/keys/pv-data";
  const std::string node = Cat(kStorageRoot, "/pv-blk.blk");
  auto pci = vm_->Hotplug(disk.path(), "pv-blk", "pv-blk");
  ASSERT_TRUE(pci.ok()) << pci.status();
  grpc::Status st = agent_->Activate(WithKey(BlockRequest("pv-blk", *pci), uri));
  ASSERT_TRUE(st.ok()) << st.error_message();
  Guest(Cat("printf block-bytes | dd of=", node, " bs=4096 seek=100 conv=sync,fsync 2>/dev/null"));
  ASSERT_TRUE(agent_->Deactivate("pv-blk").ok());
  st = agent_->Activate(WithKey(BlockRequest("pv-blk", *pci), uri));
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(LastAction("pv-blk"), "open");
  EXPECT_EQ(Guest(Cat("dd if=", node, " bs=4096 skip=100 count=1 2>/dev/null | head -c 11")), "block-bytes");
  // A block never written reads as zeros (the guard), not as an integrity error.
  EXPECT_EQ(Guest(Cat("dd if=", node, " bs=4096 skip=5000 count=1 2>/dev/null | tr -d '\\0' | wc -c")), "0\n");
  ASSERT_TRUE(agent_->Deactivate("pv-blk").ok());
  EXPECT_TRUE(vm_->Unplug("pv-blk").ok());
}

// A StatefulSet-style pod through an unmodified kata-agent: its SecureMount
// request is ephemeral-shaped (encryption_key=ephemeral, kata-agent's mkfs
// options); the attested policy and the device's authenticated header make
// it the persistent volume "pgdata" (docs/design.md §2.4, §6).
constexpr char kPgdataPolicy[] = R"(schema = "cocostorage.dev/storage-policy"
schema_version = 1
policy_version = 4
workload = "default/pgdata-0"

[[volume]]
id = "pgdata"
kind = "persistent"
key = "kbs:///default/keys/pv-data"
create = "if-blank"
blank_check = "full"
integrity = ["hmac-sha256"]
mode = "filesystem"
fs_type = "ext4"
mkfs_options = []
mount_options = []
min_size = "64Mi"
max_size = "1Gi"
routes = ["secure-mount"]
container_path = "/var/lib/postgresql"
)";

class PersistentSecureMountVmTest : public PersistentVmTest {
 protected:
  static void SetUpTestSuite() {
    *policy_ = kPgdataPolicy;
    PersistentVmTest::SetUpTestSuite();
  }
  static void TearDownTestSuite() {
    PersistentVmTest::TearDownTestSuite();
    policy_->clear();
  }

  struct Disk {
    std::string dev;
    std::string devno;
  };
  Disk Plug(const std::string& image, const std::string& serial) {
    Disk d;
    auto pci = vm_->Hotplug(image, serial, serial);
    EXPECT_TRUE(pci.ok()) << pci.status();
    auto dev = vm_->WaitForDisk(serial);
    EXPECT_TRUE(dev.ok()) << dev.status();
    if (!dev.ok()) return d;
    d.dev = *dev;
    d.devno = GuestDevNumber(vm_.get(), d.dev).value_or("");
    return d;
  }
  // kata-agent's call, from the Go ttrpc client in the guest: "ok\n" or
  // "error: <numeric gRPC code> <message>\n".
  std::string SecureMount(const Disk& d, const std::string& pci_like) {
    return Guest(Cat("coco-kata-securemount -device ", d.devno, " -mount-point ", SecureMountPoint(pci_like), " 2>&1"));
  }
  // The pod is gone: kata-agent unmounts, the agent tears the rest down.
  void EndPod(const std::string& pci_like) {
    Guest(Cat("umount ", SecureMountPoint(pci_like)));
    std::string left;
    for (int i = 0; i < 100; ++i) {
      left = Guest("dmsetup ls | grep -c coco- || true");
      if (left == "0\n") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    EXPECT_EQ(left, "0\n") << Guest("dmsetup ls");
  }
  std::string SectorsWritten(const Disk& d) {
    return Guest(Cat("awk '{print $7}' /sys/block/", d.dev.substr(d.dev.rfind('/') + 1), "/stat"));
  }
};

TEST_F(PersistentSecureMountVmTest, AStatefulPodKeepsItsDataAcrossPodsAndVms) {
  SparseImage image(*dir_, "pgdata", 128 * MiB);
  Disk disk = Plug(image.path(), "pgdata");
  // Pod 1: a blank disk, create = if-blank.
  ASSERT_EQ(SecureMount(disk, "02/00"), "ok\n");
  EXPECT_EQ(LastAction(SecureMountVolumeId("02/00")), "create");
  Guest(Cat("echo row-1 > ", SecureMountPoint("02/00"), "/table && sync"));
  // kata-agent's "-O ^has_journal" was not used: the owner's mkfs options were.
  EXPECT_NE(
      Guest(Cat("dumpe2fs -h /dev/mapper/coco-", SecureMountVolumeId("02/00"), " 2>/dev/null | grep -c has_journal")),
      "0\n");

  // While pgdata is active, a second blank disk is not "pgdata" again.
  SparseImage clone(*dir_, "pgdata-2", 128 * MiB);
  Disk other = Plug(clone.path(), "pgdata-2");
  std::string out = SecureMount(other, "03/00");
  EXPECT_EQ(out.rfind("error: 7 ", 0), 0u) << out;  // PERMISSION_DENIED
  EXPECT_NE(out.find("every persistent volume is active"), std::string::npos) << out;
  EXPECT_EQ(SectorsWritten(other), "0\n");
  EXPECT_TRUE(vm_->Unplug("pgdata-2").ok());
  EndPod("02/00");

  // Pod 2, same VM, another storage slot: the same volume, opened.
  ASSERT_EQ(SecureMount(disk, "04/00"), "ok\n");
  EXPECT_EQ(LastAction(SecureMountVolumeId("04/00")), "open");
  EXPECT_EQ(Guest(Cat("cat ", SecureMountPoint("04/00"), "/table")), "row-1\n");
  EndPod("04/00");

  // Pod 3 in a new VM (the old one is gone), same backing file and KBS key.
  Reboot();
  disk = Plug(image.path(), "pgdata");
  ASSERT_EQ(SecureMount(disk, "02/00"), "ok\n");
  EXPECT_EQ(LastAction(SecureMountVolumeId("02/00")), "open");
  EXPECT_EQ(Guest(Cat("cat ", SecureMountPoint("02/00"), "/table")), "row-1\n");
  EndPod("02/00");
  EXPECT_TRUE(vm_->Unplug("pgdata").ok());
}

// A plaintext file system handed in the volume's place is never formatted
// and never mounted as the volume.
TEST_F(PersistentSecureMountVmTest, ANonBlankDiskIsNeitherFormattedNorMounted) {
  SparseImage plain(*dir_, "plain", 128 * MiB);
  ASSERT_EQ(std::system(Cat("mkfs.ext4 -q -F ", plain.path(), " >/dev/null 2>&1").c_str()), 0);
  Disk d = Plug(plain.path(), "plain");
  std::string out = SecureMount(d, "05/00");
  EXPECT_EQ(out.rfind("error: 9 ", 0), 0u) << out;  // FAILED_PRECONDITION
  EXPECT_NE(out.find("not_blank"), std::string::npos) << out;
  EXPECT_EQ(SectorsWritten(d), "0\n");
  EXPECT_EQ(Guest(Cat("grep -c ' ", kStorageRoot, "/' /proc/mounts || true")), "0\n");
  EXPECT_TRUE(vm_->Unplug("plain").ok());
}

// blank_check = "full": bytes where no earlier volume's structure would be
// (the middle of the disk) are enough for the disk not to be blank.
TEST_F(PersistentSecureMountVmTest, FullBlankCheckFindsDataInTheMiddle) {
  SparseImage image(*dir_, "middle", 128 * MiB);
  Poke(image.path(), 64 * MiB + 3, "old rows");
  auto before = ReadFileToString(image.path(), 256 * MiB);
  ASSERT_TRUE(before.ok());
  Disk d = Plug(image.path(), "middle");
  std::string out = SecureMount(d, "06/00");
  EXPECT_EQ(out.rfind("error: 9 ", 0), 0u) << out;  // FAILED_PRECONDITION
  EXPECT_NE(out.find("has data at byte 67108867 (blank_check = full)"), std::string::npos) << out;
  EXPECT_EQ(SectorsWritten(d), "0\n");
  EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n");
  EXPECT_TRUE(vm_->Unplug("middle").ok());
  auto after = ReadFileToString(image.path(), 256 * MiB);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(*before == *after);
}

}  // namespace
}  // namespace cocostorage::vmtest
