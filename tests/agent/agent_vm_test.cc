// The guest agent on a real kernel: every claim about dm-crypt, dm-integrity,
// the zero guard, mkfs and mounts is checked here, inside a QEMU guest with
// Debian's kernel, with disks hot-plugged over QMP the way Kata does it.
// One VM serves the whole suite; after every scenario the guest kernel log
// must hold no integrity or I/O error (the tamper test expects them, then
// clears them).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <future>
#include <thread>

#include "agent_vm_support.h"
#include "cocostorage/common/base64.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::vmtest {
namespace {

constexpr uint64_t MiB = 1ull << 20;
constexpr uint64_t GiB = 1ull << 30;

class AgentVmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { StartVm({}); }

  // One VM for the suite; `agent_extra_args` configure its agent.
  static void StartVm(const std::vector<std::string>& agent_extra_args) {
    dir_ = new std::string(MakeTempDir("coco-agent-vm"));
    GuestVmOptions opts;
    opts.memory_mib = 2048;
    opts.root_ports = 24;
    opts.agent_extra_args = agent_extra_args;
    auto vm = GuestVm::Start(opts);
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_ = vm->release();
    ASSERT_TRUE(vm_->WaitAgentListening().ok()) << vm_->ConsoleTail();
    agent_ = new AgentClient(vm_->AgentTarget());
    cursor_ = new KernelLogCursor(vm_);
    (void)cursor_->NewErrors();  // boot messages are not a scenario's
  }

  static void TearDownTestSuite() {
    delete cursor_;
    delete agent_;
    delete vm_;
    if (dir_) rmdir(dir_->c_str());
    delete dir_;
  }

  void TearDown() override {
    if (vm_ == nullptr) return;
    auto errors = cursor_->NewErrors();
    ASSERT_TRUE(errors.ok()) << errors.status();
    if (!expect_kernel_errors_) {
      EXPECT_TRUE(errors->empty()) << "guest kernel reported integrity/I/O errors:\n" << Join(*errors, "\n");
    }
    if (HasFailure()) {
      std::cerr << AgentLogTail(vm_);
    }
  }

  // Plugs a fresh sparse disk; returns its PCI path.
  std::string Plug(const std::string& name, uint64_t bytes) {
    images_.push_back(std::make_unique<SparseImage>(*dir_, name, bytes));
    auto pci = vm_->Hotplug(images_.back()->path(), name, name);
    EXPECT_TRUE(pci.ok()) << pci.status();
    return pci.ok() ? *pci : "";
  }
  const std::string& ImagePath() const { return images_.back()->path(); }

  std::string Guest(const std::string& cmd) {
    auto r = vm_->Exec(cmd, std::chrono::minutes(5), {.merge_output = true});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->out : "";
  }
  int GuestExit(const std::string& cmd) {
    auto r = vm_->Exec(cmd, std::chrono::minutes(5), {.merge_output = true});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->exit_code : -1;
  }

  // Nothing of ours is left in the guest: mappings, loop devices, headers.
  void ExpectNoLeftovers() {
    EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n") << Guest("dmsetup ls");
    EXPECT_EQ(Guest("find /run/cocostorage/headers /run/cocostorage/guard /run/cocostorage/volumes -type f | wc -l"),
              "0\n");
    EXPECT_EQ(Guest("cat /sys/block/loop*/loop/backing_file 2>/dev/null | grep -c . || true"), "0\n");
    EXPECT_EQ(Guest(Cat("grep -c ", kStorageRoot, " /proc/mounts || true")), "0\n");
  }

  static std::string* dir_;
  static GuestVm* vm_;
  static AgentClient* agent_;
  static KernelLogCursor* cursor_;
  bool expect_kernel_errors_ = false;
  std::vector<std::unique_ptr<SparseImage>> images_;
};

std::string* AgentVmTest::dir_ = nullptr;
GuestVm* AgentVmTest::vm_ = nullptr;
AgentClient* AgentVmTest::agent_ = nullptr;
KernelLogCursor* AgentVmTest::cursor_ = nullptr;

class AgentFsTest : public AgentVmTest, public ::testing::WithParamInterface<const char*> {};

// activate -> write -> drop caches -> read back -> deactivate -> activate
// again: a fresh, empty volume (new ephemeral key).
TEST_P(AgentFsTest, LifecycleWriteReadReactivate) {
  const std::string fs = GetParam();
  const std::string id = "life-" + fs;
  std::string pci = Plug(id, 1 * GiB);
  pb::Volume vol;
  auto s = agent_->Activate(FsRequest(id, pci, fs), &vol);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(vol.state(), pb::VOLUME_STATE_ACTIVE) << vol.message();
  EXPECT_EQ(vol.cipher(), "aes-xts-plain64");
  EXPECT_EQ(vol.integrity_algorithm(), "hmac(sha256)");
  EXPECT_EQ(vol.sector_size(), 4096u);
  EXPECT_TRUE(vol.integrity_enabled());
  EXPECT_EQ(vol.fs_type(), fs);
  EXPECT_GT(vol.capacity_bytes(), 900 * MiB);
  const std::string mnt = vol.target_path();

  EXPECT_EQ(Guest(Cat("stat -c '%g %a' ", mnt)), "2000 2775\n");  // fsGroup
  EXPECT_EQ(Guest(Cat("grep ' ", mnt, " ' /proc/mounts | cut -d' ' -f3")), fs + "\n");
  ASSERT_EQ(GuestExit(Cat("for i in 1 2 3; do dd if=/dev/urandom of=", mnt,
                          "/f$i bs=1M count=16 2>/dev/null || exit 1; done; "
                          "cd ",
                          mnt, " && md5sum f1 f2 f3 > /tmp/", id, ".sums && sync")),
            0);
  ASSERT_EQ(GuestExit(Cat("echo 3 > /proc/sys/vm/drop_caches; cd ", mnt, " && md5sum -c /tmp/", id, ".sums")), 0);

  pb::Volume stat;
  ASSERT_TRUE(agent_->Get(id, &stat).ok());
  EXPECT_GE(stat.used_bytes(), 48 * MiB);

  bool was = false;
  ASSERT_TRUE(agent_->Deactivate(id, &was).ok());
  EXPECT_TRUE(was);
  ExpectNoLeftovers();

  ASSERT_TRUE(agent_->Activate(FsRequest(id, pci, fs), &vol).ok());
  EXPECT_EQ(Guest(Cat("ls ", mnt, " | grep -v lost+found | grep -c . || true")), "0\n")
      << "reactivated volume is not empty";
  ASSERT_TRUE(agent_->Deactivate(id).ok());
  ExpectNoLeftovers();
}

// The write/read/fsck/remount stress cycle the zero guard must survive with
// no read of a never-written sector: parallel writers, whole-device reads
// (readahead, blkid), a full fsck.
TEST_P(AgentFsTest, StressCycleHasNoIntegrityErrors) {
  const std::string fs = GetParam();
  const std::string id = "stress-" + fs;
  std::string pci = Plug(id, 1 * GiB);
  pb::Volume vol;
  ASSERT_TRUE(agent_->Activate(FsRequest(id, pci, fs), &vol).ok());
  const std::string mnt = vol.target_path();
  const std::string dev = vol.mapped_device();
  ASSERT_EQ(GuestExit(Cat("for j in 1 2 3 4; do (mkdir -p ", mnt,
                          "/d$j && for i in $(seq 1 40); do "
                          "dd if=/dev/urandom of=",
                          mnt,
                          "/d$j/f$i bs=64k count=$((i % 7 + 1)) 2>/dev/null; done) & done; wait; "
                          "dd if=/dev/urandom of=",
                          mnt,
                          "/big bs=1M count=64 2>/dev/null; sync; "
                          "find ",
                          mnt, " -type f | sort | xargs md5sum > /tmp/", id, ".sums")),
            0);
  ASSERT_EQ(GuestExit(Cat("echo 3 > /proc/sys/vm/drop_caches; md5sum -c /tmp/", id, ".sums >/dev/null")), 0);
  // Reads of the whole mapped device hit every never-written block.
  ASSERT_EQ(GuestExit(Cat("blkid ", dev, " && dd if=", dev, " of=/dev/null bs=1M 2>/dev/null")), 0);
  ASSERT_EQ(GuestExit(Cat("umount ", mnt)), 0);
  const std::string fsck = fs == "ext4" ? Cat("e2fsck -fn ", dev) : Cat("xfs_repair -n ", dev);
  EXPECT_EQ(GuestExit(fsck), 0) << Guest(fsck);
  ASSERT_EQ(GuestExit(Cat("mount -t ", fs, " ", dev, " ", mnt, " && md5sum -c /tmp/", id, ".sums >/dev/null")), 0);
  ASSERT_TRUE(agent_->Deactivate(id).ok());
  ExpectNoLeftovers();
}

INSTANTIATE_TEST_SUITE_P(Fs, AgentFsTest, ::testing::Values("ext4", "xfs"));

struct CryptoCase {
  const char* name;
  pb::Integrity integrity;
  pb::InitMode init;
  const char* cipher;               // as the kernel/libcryptsetup reports it
  const char* integrity_algorithm;  // "" when none
};

class AgentCryptoTest : public AgentVmTest, public ::testing::WithParamInterface<CryptoCase> {
 public:
  // INTEGRITY_NONE is refused unless the agent's configuration allows it.
  static void SetUpTestSuite() { StartVm({"--allow-integrity-none"}); }
};

// Every integrity choice and the full-wipe init mode, on the real kernel:
// activate, write, read back after dropping caches, read the whole device,
// deactivate; the mapping reports what was asked for.
TEST_P(AgentCryptoTest, ModeWorksEndToEnd) {
  const CryptoCase& c = GetParam();
  const std::string id = std::string("mode-") + c.name;
  std::string pci = Plug(id, 96 * MiB);
  auto req = FsRequest(id, pci, "ext4");
  req.set_integrity(c.integrity);
  req.set_init_mode(c.init);
  pb::Volume vol;
  auto s = agent_->Activate(req, &vol);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(vol.state(), pb::VOLUME_STATE_ACTIVE) << vol.message();
  EXPECT_EQ(vol.cipher(), c.cipher);
  EXPECT_EQ(vol.integrity_algorithm(), c.integrity_algorithm);
  EXPECT_EQ(vol.integrity_enabled(), c.integrity != pb::INTEGRITY_NONE);
  EXPECT_EQ(vol.init_mode(), c.init);
  if (c.init == pb::INIT_MODE_FULL_WIPE) {
    // No guard layer: the consumer sits directly on the wiped crypt mapping,
    // and the wipe wrote the whole device.
    EXPECT_EQ(vol.mapped_device(), Cat("/dev/mapper/coco-", id, ":crypt"));
    EXPECT_GE(vol.provisioning_bytes_written(), 80 * MiB);
  }
  ASSERT_EQ(GuestExit(Cat("dd if=/dev/urandom of=", vol.target_path(), "/f bs=1M count=8 2>/dev/null && md5sum ",
                          vol.target_path(), "/f > /tmp/", id,
                          ".sum && sync && echo 3 > /proc/sys/vm/drop_caches && "
                          "md5sum -c /tmp/",
                          id, ".sum && dd if=", vol.mapped_device(), " of=/dev/null bs=1M 2>/dev/null")),
            0);
  ASSERT_TRUE(agent_->Deactivate(id).ok());
  ExpectNoLeftovers();
}

INSTANTIATE_TEST_SUITE_P(
    Modes, AgentCryptoTest,
    ::testing::Values(
        CryptoCase{"none", pb::INTEGRITY_NONE, pb::INIT_MODE_ZERO_GUARD, "aes-xts-plain64", ""},
        CryptoCase{"aegis128", pb::INTEGRITY_AEGIS128, pb::INIT_MODE_ZERO_GUARD, "aegis128-random", "aead"},
        CryptoCase{"aesgcm", pb::INTEGRITY_AES_GCM, pb::INIT_MODE_ZERO_GUARD, "aes-gcm-random", "aead"},
        CryptoCase{"wipe", pb::INTEGRITY_HMAC_SHA256, pb::INIT_MODE_FULL_WIPE, "aes-xts-plain64", "hmac(sha256)"}),
    [](const ::testing::TestParamInfo<CryptoCase>& p) { return std::string(p.param.name); });

TEST_F(AgentVmTest, HostNeverSeesPlaintextOrHeader) {
  std::string pci = Plug("plain", 512 * MiB);
  pb::Volume vol;
  ASSERT_TRUE(agent_->Activate(FsRequest("plain", pci, "ext4"), &vol).ok());
  const std::string canary = "COCO-CANARY-7f3a9e-PLAINTEXT-MUST-NOT-LEAK";
  ASSERT_EQ(GuestExit(Cat("for i in $(seq 1 20000); do echo ", canary, "; done > ", vol.target_path(),
                          "/secret.txt && sync && echo 3 > /proc/sys/vm/drop_caches && grep -c ", canary, " ",
                          vol.target_path(), "/secret.txt")),
            0);
  EXPECT_GT(BlockHashes(ImagePath()).size(), 100u) << "nothing reached the backing file";
  EXPECT_FALSE(FileContains(ImagePath(), canary)) << "plaintext found in the host's backing file";
  EXPECT_FALSE(FileContains(ImagePath(), "LUKS\xba\xbe")) << "a LUKS header reached the host";
  ASSERT_TRUE(agent_->Deactivate("plain").ok());
}

// Bytes flipped on the host under a mounted volume: the guest's read fails
// with EIO, it never returns altered data.
TEST_F(AgentVmTest, HostTamperingGivesEioNeverAlteredData) {
  std::string pci = Plug("tamper", 512 * MiB);
  pb::Volume vol;
  ASSERT_TRUE(agent_->Activate(FsRequest("tamper", pci, "ext4"), &vol).ok());
  const std::string file = vol.target_path() + "/data.bin";
  auto before = BlockHashes(ImagePath());
  ASSERT_EQ(GuestExit(Cat("dd if=/dev/urandom of=", file, " bs=1M count=4 2>/dev/null && sync && md5sum ", file,
                          " > /tmp/tamper.sum && sync")),
            0);
  auto after = BlockHashes(ImagePath());
  std::vector<uint64_t> changed;
  for (const auto& [off, h] : after) {
    auto it = before.find(off);
    if (it == before.end() || it->second != h) changed.push_back(off);
  }
  ASSERT_GE(changed.size(), 1024u) << "the 4 MiB file should have changed at least 1024 blocks";
  ASSERT_TRUE(FlipBytes(ImagePath(), changed).ok());
  auto r = vm_->Exec(Cat("echo 3 > /proc/sys/vm/drop_caches; cat ", file, " > /dev/null"), std::chrono::minutes(2),
                     {.merge_output = true});
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->exit_code, 0) << "read of tampered data succeeded";
  EXPECT_NE(r->out.find("Input/output error"), std::string::npos) << r->out;
  // Whatever is readable must be the original, never altered bytes.
  auto sum = vm_->Exec(Cat("md5sum -c /tmp/tamper.sum"), std::chrono::minutes(2), {.merge_output = true});
  ASSERT_TRUE(sum.ok());
  EXPECT_EQ(sum->out.find(": OK"), std::string::npos) << "tampered file verified as intact";
  auto errors = cursor_->NewErrors();
  ASSERT_TRUE(errors.ok());
  EXPECT_FALSE(errors->empty()) << "no integrity error was logged for the tampered reads";
  bool aead = false;
  for (const auto& e : *errors) aead = aead || e.find("INTEGRITY AEAD ERROR") != std::string::npos;
  EXPECT_TRUE(aead) << Join(*errors, "\n");
  expect_kernel_errors_ = true;  // the errors above are the point of this test
  ASSERT_TRUE(agent_->Deactivate("tamper").ok());
}

// Raw block mode: the consumer may read anything; the safe default (zero
// guard) makes never-written ranges read as zeros, without errors.
TEST_F(AgentVmTest, BlockModeReadsOfUnwrittenRangesAreZeros) {
  std::string pci = Plug("rawblk", 256 * MiB);
  pb::Volume vol;
  auto req = BlockRequest("rawblk", pci);
  req.mutable_filesystem()->set_fs_group(3000);
  ASSERT_TRUE(agent_->Activate(req, &vol).ok());
  EXPECT_EQ(vol.mode(), pb::VOLUME_MODE_BLOCK);
  EXPECT_EQ(Guest(Cat("stat -c '%F %g' ", vol.target_path())), "block special file 3000\n");
  const std::string node = vol.target_path();
  // A pattern in the middle, then the whole device read back.
  ASSERT_EQ(GuestExit(Cat("yes PATTERN | head -c 1048576 | dd of=", node,
                          " bs=4096 seek=10000 oflag=direct conv=notrunc 2>/dev/null")),
            0);
  EXPECT_EQ(Guest(Cat("dd if=", node, " bs=4096 skip=10000 count=1 iflag=direct 2>/dev/null | head -c 8")),
            "PATTERN\n");
  EXPECT_EQ(GuestExit(Cat("dd if=", node, " of=/tmp/raw bs=1M iflag=direct 2>/dev/null")), 0);
  EXPECT_EQ(Guest("tr -d '\\000' < /tmp/raw | wc -c"), Cat(1048576, "\n")) << "unwritten ranges must read as zeros";
  Guest("rm -f /tmp/raw");
  ASSERT_TRUE(agent_->Deactivate("rawblk").ok());
  EXPECT_EQ(GuestExit(Cat("test -e ", node)), 1);
}

// Activations already waiting while their disks are hot-plugged, several at
// once and in rounds: a just-plugged disk answered ENXIO on open under this
// load and the agent gave up with NOT_FOUND (one run in two). Now a transient
// open error means "not ready yet" until the deadline; the rounds make a pass
// by luck unlikely.
TEST_F(AgentVmTest, ConcurrentActivationOfSeveralVolumes) {
  constexpr int kDisks = 4, kRounds = 3;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(Cat("round ", round));
    std::vector<std::string> names;
    for (int i = 0; i < kDisks; ++i) names.push_back(Cat("conc", round, "x", i));
    std::vector<std::future<grpc::Status>> results;
    for (int i = 0; i < kDisks; ++i) {
      results.push_back(std::async(std::launch::async, [&, i] {
        auto req = FsRequest(names[i], "02/00", i % 2 ? "xfs" : "ext4");
        req.mutable_device()->set_serial(names[i]);  // by serial: the disk is not there yet
        req.set_device_timeout_ms(120000);
        return agent_->Activate(req);
      }));
    }
    for (int i = 0; i < kDisks; ++i) {
      images_.push_back(std::make_unique<SparseImage>(*dir_, names[i], 512 * MiB));
      auto pci = vm_->Hotplug(images_.back()->path(), names[i], names[i]);
      ASSERT_TRUE(pci.ok()) << pci.status();
    }
    for (auto& r : results) {
      auto st = r.get();
      EXPECT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
    }
    std::vector<pb::Volume> list;
    ASSERT_TRUE(agent_->List(&list).ok());
    EXPECT_EQ(list.size(), static_cast<size_t>(kDisks));
    for (const auto& v : list) EXPECT_EQ(v.state(), pb::VOLUME_STATE_ACTIVE) << v.volume_id() << ": " << v.message();
    std::vector<std::future<grpc::Status>> downs;
    for (int i = 0; i < kDisks; ++i) {
      downs.push_back(std::async(std::launch::async, [&, i] { return agent_->Deactivate(names[i]); }));
    }
    for (auto& d : downs) EXPECT_TRUE(d.get().ok());
    for (const auto& n : names) EXPECT_TRUE(vm_->Unplug(n).ok()) << n;
  }
  ExpectNoLeftovers();
}

// Killed at each point of activation, restarted by its supervisor: the new
// agent undoes the partial work, and a retry succeeds.
TEST_F(AgentVmTest, AgentKilledMidActivationRecovers) {
  std::string pci = Plug("crash", 512 * MiB);
  for (const char* point : {"after-record", "after-crypt", "after-guard", "after-mkfs"}) {
    SCOPED_TRACE(point);
    ASSERT_TRUE(vm_->SetAgentCommandLine({"--listen=tcp://0.0.0.0:7001", Cat("--storage-root=", kStorageRoot),
                                          "--state-dir=/run/cocostorage", "--insecure-no-storage-policy"},
                                         {Cat("COCOSTORAGE_CRASH_POINT=", point)})
                    .ok());
    ASSERT_TRUE(vm_->RestartAgent().ok());
    ASSERT_TRUE(vm_->WaitAgentListening().ok());
    AgentClient no_retry(vm_->AgentTarget(), RetryPolicy{.attempts = 1});
    auto s = no_retry.Activate(FsRequest("crash", pci, "ext4"));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
    // Back to a normal agent; its startup recovery must clean up.
    ASSERT_TRUE(vm_->SetAgentCommandLine({"--listen=tcp://0.0.0.0:7001", Cat("--storage-root=", kStorageRoot),
                                          "--state-dir=/run/cocostorage", "--insecure-no-storage-policy"},
                                         {})
                    .ok());
    ASSERT_TRUE(vm_->RestartAgent().ok());
    ASSERT_TRUE(vm_->WaitAgentListening().ok());
    std::vector<pb::Volume> list;
    ASSERT_TRUE(agent_->List(&list).ok());
    EXPECT_TRUE(list.empty());
    ExpectNoLeftovers();
    pb::Volume vol;
    auto retry = agent_->Activate(FsRequest("crash", pci, "ext4"), &vol);
    ASSERT_TRUE(retry.ok()) << retry.error_message();
    ASSERT_TRUE(agent_->Deactivate("crash").ok());
  }
}

// A restarted agent reports active volumes truthfully and keeps serving them.
TEST_F(AgentVmTest, AgentRestartRediscoversActiveVolumes) {
  std::string pci = Plug("restart", 512 * MiB);
  pb::Volume before;
  ASSERT_TRUE(agent_->Activate(FsRequest("restart", pci, "xfs"), &before).ok());
  ASSERT_EQ(GuestExit(Cat("echo hello > ", before.target_path(), "/keep && sync")), 0);
  ASSERT_TRUE(vm_->KillAgent(SIGKILL).ok());
  ASSERT_TRUE(vm_->WaitAgentListening().ok());
  pb::Volume after;
  auto got = agent_->Get("restart", &after);
  ASSERT_TRUE(got.ok()) << got.error_code() << " " << got.error_message();
  EXPECT_EQ(after.state(), pb::VOLUME_STATE_ACTIVE) << after.message();
  EXPECT_EQ(after.mapped_device(), before.mapped_device());
  EXPECT_EQ(after.capacity_bytes(), before.capacity_bytes());
  EXPECT_EQ(Guest(Cat("cat ", after.target_path(), "/keep")), "hello\n");
  // Idempotent re-activation after restart.
  ASSERT_TRUE(agent_->Activate(FsRequest("restart", pci, "xfs")).ok());
  // Unmounted behind the agent's back: reported, not hidden.
  ASSERT_EQ(GuestExit(Cat("umount ", after.target_path())), 0);
  ASSERT_TRUE(agent_->Get("restart", &after).ok());
  EXPECT_EQ(after.state(), pb::VOLUME_STATE_DEGRADED);
  EXPECT_NE(after.message().find("not mounted"), std::string::npos) << after.message();
  ASSERT_TRUE(agent_->Deactivate("restart").ok());
  ExpectNoLeftovers();
}

TEST_F(AgentVmTest, BadRequestsGetClearCodes) {
  std::string pci = Plug("small", 64 * MiB);
  auto req = FsRequest("bad1", "1e/00", "ext4");
  req.set_device_timeout_ms(500);
  EXPECT_EQ(agent_->Activate(req).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  req = FsRequest("bad2", pci, "ext4");
  req.set_target_path("/etc/cron.d/x");
  EXPECT_EQ(agent_->Activate(req).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(agent_->Activate(FsRequest("bad3", pci, "btrfs")).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(agent_->Activate(FsRequest("bad4", pci, "xfs")).error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << "64 MiB is too small for xfs";
  ASSERT_TRUE(agent_->Activate(FsRequest("ok", pci, "ext4")).ok());
  auto other = FsRequest("ok", pci, "ext4");
  other.mutable_filesystem()->add_mount_options("noatime");
  EXPECT_EQ(agent_->Activate(other).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(agent_->Activate(FsRequest("thief", pci, "ext4")).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  pb::Volume v;
  EXPECT_EQ(agent_->Get("nope", &v).error_code(), grpc::StatusCode::NOT_FOUND);
  bool was = true;
  EXPECT_TRUE(agent_->Deactivate("nope", &was).ok());
  EXPECT_FALSE(was);
  ASSERT_TRUE(agent_->Deactivate("ok").ok());
  ExpectNoLeftovers();
}

// The production listener: AF_VSOCK connections accepted by the agent and
// handed to gRPC as file descriptors. The host here has no vhost-vsock, so a
// second agent in the guest is reached over vsock loopback (CID 1), by
// agentctl in the guest.
TEST_F(AgentVmTest, VsockListenerServesTheApi) {
  ASSERT_EQ(
      GuestExit(
          "mkdir -p /run/coco-vsock /run/vsock-root && "
          "(cocostorage-agent --listen=vsock://7100 --state-dir=/run/coco-vsock "
          "--storage-root=/run/vsock-root --cdh-socket=off --insecure-no-storage-policy > /run/vsock-agent.log 2>&1 & "
          "echo $! > /run/vsock-agent.pid)"),
      0);
  std::string out;
  for (int i = 0; i < 50; ++i) {
    auto r =
        vm_->Exec("cocostorage-agentctl --addr=vsock:1:7100 info", std::chrono::seconds(30), {.merge_output = true});
    ASSERT_TRUE(r.ok());
    out = r->out;
    if (r->exit_code == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_NE(out.find("\"storageRoot\": \"/run/vsock-root\""), std::string::npos)
      << out << Guest("cat /run/vsock-agent.log");
  EXPECT_NE(out.find("\"ext4\""), std::string::npos) << out;
  // Errors travel over vsock too.
  auto bad =
      vm_->Exec("cocostorage-agentctl --addr=vsock:1:7100 get nope", std::chrono::seconds(30), {.merge_output = true});
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->exit_code, 5) << bad->out;  // NOT_FOUND
  EXPECT_EQ(GuestExit("kill -TERM $(cat /run/vsock-agent.pid)"), 0);
}

// Kata's default block driver for QEMU is virtio-scsi: the disk kata-agent
// resolves to MAJ:MIN is then an sdX behind the SCSI controller. Same call,
// same result; a partition of it is refused before anything is touched.
TEST_F(AgentVmTest, SecureMountOfAVirtioScsiDisk) {
  images_.push_back(std::make_unique<SparseImage>(*dir_, "scsi1", 256 * MiB));
  ASSERT_TRUE(vm_->Hotplug(images_.back()->path(), "scsi1", "scsi1", {.bus = HotplugOptions::Bus::kScsi}).ok());
  auto disk = vm_->WaitForScsiDisk("scsi1");
  ASSERT_TRUE(disk.ok()) << disk.status() << Guest("ls -l /sys/block");
  const std::string name = disk->substr(disk->rfind('/') + 1);
  std::string devno = Guest(Cat("cat /sys/block/", name, "/dev"));
  while (!devno.empty() && devno.back() == '\n') devno.pop_back();
  ASSERT_FALSE(devno.empty());
  const std::string mount_point = SecureMountPoint("scsi-0:0:0:0");
  auto r = vm_->Exec(Cat("coco-kata-securemount -device ", devno, " -mount-point ", mount_point),
                     std::chrono::minutes(3), {.merge_output = true});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << r->out;
  ASSERT_EQ(GuestExit(Cat("echo over-scsi > ", mount_point, "/f && sync && echo 3 > /proc/sys/vm/drop_caches && ",
                          "grep -q over-scsi ", mount_point, "/f")),
            0);
  // The host sees ciphertext only.
  auto img = ReadFileToString(images_.back()->path(), 256 * MiB);
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(img->find("over-scsi"), std::string::npos);
  std::string id = SecureMountVolumeId("scsi-0:0:0:0");
  while (id.back() == '=') id.pop_back();
  pb::Volume v;
  ASSERT_TRUE(agent_->Get(id, &v).ok());
  EXPECT_EQ(v.integrity_algorithm(), "hmac(sha256)");
  EXPECT_EQ(v.device_path(), *disk) << v.DebugString();
  ASSERT_TRUE(agent_->Deactivate(id).ok());
  ExpectNoLeftovers();
  EXPECT_TRUE(vm_->Unplug("scsi1").ok());
}

// kata-agent never tells the CDH a storage is done: it unmounts it when the
// pod goes. The agent notices the mount going away and closes the rest
// (mappings, header, guard metadata, key); pod cycles leak nothing.
TEST_F(AgentVmTest, SecureMountVolumeIsClosedWhenKataAgentUnmounts) {
  std::string pci = Plug("unmount", 256 * MiB);
  auto dev = vm_->WaitForDisk("unmount");
  ASSERT_TRUE(dev.ok()) << dev.status();
  std::string devno = Guest(Cat("cat /sys/block/", dev->substr(dev->rfind('/') + 1), "/dev"));
  while (!devno.empty() && devno.back() == '\n') devno.pop_back();
  const std::string mount_point = SecureMountPoint(pci);
  std::string fds_before;
  for (int cycle = 0; cycle < 4; ++cycle) {
    SCOPED_TRACE(cycle);
    ASSERT_EQ(Guest(Cat("coco-kata-securemount -device ", devno, " -mount-point ", mount_point)), "ok\n");
    ASSERT_EQ(GuestExit(Cat("echo pod-", cycle, " > ", mount_point, "/f && sync")), 0);
    ASSERT_EQ(GuestExit(Cat("umount ", mount_point)), 0);
    // The agent reacts to the mount table's change, not on a timer; allow
    // for TCG's pace.
    ASSERT_EQ(GuestExit("for i in $(seq 1 100); do [ \"$(dmsetup ls | grep -c coco-)\" = 0 ] && exit 0; "
                        "sleep 0.1; done; exit 1"),
              0)
        << Guest("dmsetup ls");
    ExpectNoLeftovers();
    if (cycle == 0) fds_before = Guest("ls /proc/$(cat /run/agent.pid)/fd | wc -l");
  }
  EXPECT_EQ(Guest("ls /proc/$(cat /run/agent.pid)/fd | wc -l"), fds_before);
  EXPECT_NE(AgentLogTail(vm_, 20000).find("volume.unmounted"), std::string::npos);
  EXPECT_TRUE(vm_->Unplug("unmount").ok());
}

// Every CDH service but SecureMount goes on to the real CDH, moved to the
// upstream socket: here a stand-in written with the Go ttrpc library, called
// by the Go client on cdh.sock. Bytes (binary ones included) and status come
// back unchanged; without an upstream the answer is UNAVAILABLE, at once.
TEST_F(AgentVmTest, OtherCdhServicesAreForwardedToTheRealCdh) {
  const std::string upstream = "/run/confidential-containers/cdh-upstream.sock";
  ASSERT_EQ(GuestExit(Cat("(coco-kata-securemount -serve-cdh ", upstream,
                          " > /run/cdh-standin.log 2>&1 & echo $! > /run/cdh-standin.pid); "
                          "for i in $(seq 1 50); do [ -S ",
                          upstream, " ] && exit 0; sleep 0.1; done; exit 1")),
            0)
      << Guest("cat /run/cdh-standin.log");
  const std::string uri = "kbs:///repo/type/tag";
  EXPECT_EQ(Guest(Cat("coco-kata-securemount -get-resource ", uri)),
            Cat("resource: ", HexEncode(Cat("standin:", uri)), "00ff80\n"));
  EXPECT_EQ(Guest("coco-kata-securemount -get-resource kbs:///repo/type/deny"),
            "error: 7 stand-in CDH says no to kbs:///repo/type/deny\n");
  ASSERT_EQ(GuestExit("kill $(cat /run/cdh-standin.pid)"), 0);
  ASSERT_EQ(
      GuestExit(Cat("for i in $(seq 1 50); do [ -S ", upstream, " ] || exit 0; rm -f ", upstream, "; sleep 0.1; done")),
      0);
  std::string out = Guest(Cat("coco-kata-securemount -timeout 20s -get-resource ", uri));
  EXPECT_EQ(out.rfind("error: 14 ", 0), 0u) << out;
  EXPECT_NE(out.find("no Confidential Data Hub behind cocostorage"), std::string::npos) << out;
}

// Many cycles leave nothing behind: mappings, loop devices, headers, mounts,
// and the agent's own file descriptors stay flat.
TEST_F(AgentVmTest, RepeatedCyclesLeakNothing) {
  std::string pci = Plug("cycles", 512 * MiB);
  std::string fds_before;
  for (int i = 0; i < 6; ++i) {
    auto req = i % 3 == 2 ? BlockRequest("cycles", pci) : FsRequest("cycles", pci, i % 2 ? "xfs" : "ext4");
    auto s = agent_->Activate(req);
    ASSERT_TRUE(s.ok()) << "cycle " << i << ": " << s.error_message();
    ASSERT_TRUE(agent_->Deactivate("cycles").ok());
    if (i == 0) fds_before = Guest("ls /proc/$(cat /run/agent.pid)/fd | wc -l");
  }
  ExpectNoLeftovers();
  EXPECT_EQ(Guest("ls /proc/$(cat /run/agent.pid)/fd | wc -l"), fds_before);
  EXPECT_EQ(Guest("grep -c ' /dev/vd' /proc/mounts || true"), "0\n");
}

// ---- what a hostile host tried (issue: close what a hostile host can do) ----

// The host asks for confidentiality without tamper evidence: refused by the
// agent's own minimum, nothing formatted.
TEST_F(AgentVmTest, IntegrityDowngradeIsRefusedByDefault) {
  std::string pci = Plug("downgrade", 96 * MiB);
  auto req = FsRequest("downgrade", pci, "ext4");
  req.set_integrity(pb::INTEGRITY_NONE);
  EXPECT_EQ(agent_->Activate(req).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n");
  // The disk was never written (sysfs stat field 7: sectors written).
  EXPECT_EQ(Guest("for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = downgrade ] && awk '{print $7}' $d/stat; "
                  "done"),
            "0\n");
}

// Activating id "X-crypt" used to remove volume X's crypt mapping (the key of
// X was then gone for good): derived names are injective now.
TEST_F(AgentVmTest, VolumeIdsThatLookLikeLayerNamesDoNotCollide) {
  std::string a = Plug("nameA", 96 * MiB);
  std::string b = Plug("nameB", 96 * MiB);
  ASSERT_TRUE(agent_->Activate(FsRequest("x", a, "ext4")).ok());
  ASSERT_EQ(GuestExit(Cat("echo keep > ", kStorageRoot, "/x/f && sync")), 0);
  auto s = agent_->Activate(FsRequest("x-crypt", b, "ext4"));
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(agent_->Deactivate("x-crypt").ok());
  pb::Volume v;
  ASSERT_TRUE(agent_->Get("x", &v).ok());
  EXPECT_EQ(v.state(), pb::VOLUME_STATE_ACTIVE) << v.message();
  EXPECT_EQ(Guest(Cat("echo 3 > /proc/sys/vm/drop_caches && cat ", kStorageRoot, "/x/f")), "keep\n");
  ASSERT_TRUE(agent_->Deactivate("x").ok());
  ExpectNoLeftovers();
}

// One disk named by PCI path and by serial must not be claimed twice.
TEST_F(AgentVmTest, SameDiskByAnotherNameIsRefused) {
  std::string pci = Plug("twonames", 96 * MiB);
  ASSERT_TRUE(agent_->Activate(FsRequest("byPci", pci, "ext4")).ok());
  auto by_serial = FsRequest("bySerial", pci, "ext4");
  by_serial.mutable_device()->set_serial("twonames");
  EXPECT_EQ(agent_->Activate(by_serial).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  pb::Volume v;
  ASSERT_TRUE(agent_->Get("byPci", &v).ok());
  EXPECT_EQ(v.state(), pb::VOLUME_STATE_ACTIVE) << v.message();
  ASSERT_TRUE(agent_->Deactivate("byPci").ok());
  ExpectNoLeftovers();
}

// A target that is already a mount point (someone else's) is refused; the
// failure leaves that mount alone.
TEST_F(AgentVmTest, TargetThatIsAlreadyAMountPointIsRefusedAndKept) {
  std::string pci = Plug("mounted", 96 * MiB);
  const std::string target = Cat(kStorageRoot, "/mounted");
  ASSERT_EQ(GuestExit(Cat("mkdir -p ", target, " && mount -t tmpfs -o size=1m other ", target, " && echo mine > ",
                          target, "/theirs")),
            0);
  EXPECT_EQ(agent_->Activate(FsRequest("mounted", pci, "ext4")).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Guest(Cat("cat ", target, "/theirs")), "mine\n");
  EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n");
  ASSERT_EQ(GuestExit(Cat("umount ", target, " && rmdir ", target)), 0);
  ExpectNoLeftovers();
}

// mke2fs keeps the last -E: a requested -E used to replace the agent's lazy
// init and make provisioning linear again. Merged now: still flat.
TEST_F(AgentVmTest, RequestedExtendedOptionsKeepProvisioningFlat) {
  std::string pci = Plug("ext-opts", 2 * GiB);
  auto req = FsRequest("ext-opts", pci, "ext4");
  req.mutable_filesystem()->add_mkfs_options("-E");
  req.mutable_filesystem()->add_mkfs_options("stride=8");
  pb::Volume v;
  auto s = agent_->Activate(req, &v);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_LT(v.provisioning_bytes_written(), 64 * MiB) << "lazy init was lost";
  EXPECT_NE(Guest(Cat("dumpe2fs -h ", v.mapped_device(), " 2>/dev/null | grep -i 'RAID stride'")).find("8"),
            std::string::npos);
  // Mounted nodev and nosuid whatever the request said.
  EXPECT_NE(Guest(Cat("grep ' ", v.target_path(), " ' /proc/mounts")).find("nosuid,nodev"), std::string::npos)
      << Guest("cat /proc/mounts");
  // Asking to undo the agent's own settings is refused.
  auto bad = FsRequest("ext-bad", pci, "ext4");
  bad.mutable_filesystem()->add_mkfs_options("-E");
  bad.mutable_filesystem()->add_mkfs_options("lazy_itable_init=0");
  EXPECT_EQ(agent_->Activate(bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(agent_->Deactivate("ext-opts").ok());
  ExpectNoLeftovers();
}

// One request used to crash the agent (std::regex recursion on a long -O),
// another made its state record unreadable (120,000 mkfs options).
TEST_F(AgentVmTest, HugeRequestsAreRefusedAndTheAgentSurvives) {
  std::string pci = Plug("huge", 96 * MiB);
  std::string pid_before = Guest("cat /run/agent.pid");
  auto req = FsRequest("huge", pci, "ext4");
  std::string features = "has_journal";
  while (features.size() < 300000) features += ",has_journal";
  req.mutable_filesystem()->add_mkfs_options("-O");
  req.mutable_filesystem()->add_mkfs_options(features);
  EXPECT_EQ(agent_->Activate(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req = FsRequest("huge", pci, "ext4");
  for (int i = 0; i < 120000; ++i) req.mutable_filesystem()->add_mkfs_options("-j");
  EXPECT_EQ(agent_->Activate(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Guest("cat /run/agent.pid"), pid_before) << "the agent restarted";
  pb::AgentInfo info;
  EXPECT_TRUE(agent_->Info(&info).ok());
  EXPECT_EQ(Guest("ls /run/cocostorage/volumes | wc -l"), "0\n");
}

// A disk that holds a file system (the host's, or another workload's) is
// not formatted by an ephemeral activation; its bytes stay as they were.
TEST_F(AgentVmTest, DiskWithAFileSystemIsNotFormatted) {
  images_.push_back(std::make_unique<SparseImage>(*dir_, "hasfs", 96 * MiB));
  const std::string img = images_.back()->path();
  ASSERT_EQ(std::system(Cat("mkfs.ext4 -q -F -L hostdata ", img, " >/dev/null 2>&1").c_str()), 0);
  auto before = BlockHashes(img);
  auto pci = vm_->Hotplug(img, "hasfs", "hasfs");
  ASSERT_TRUE(pci.ok()) << pci.status();
  auto s = agent_->Activate(FsRequest("hasfs", *pci, "ext4"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_NE(s.error_message().find("ext4"), std::string::npos) << s.error_message();
  EXPECT_EQ(BlockHashes(img), before);
  EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n");
  ExpectNoLeftovers();
}

// A few hundred calls for a disk that never appears used to keep both vCPUs
// busy for 25 minutes after the clients gave up. Now: at most 16 work at
// once (RESOURCE_EXHAUSTED beyond), and a caller that leaves frees its slot.
TEST_F(AgentVmTest, AbandonedActivationsAreCappedAndStopWhenTheCallerLeaves) {
  auto channel = grpc::CreateChannel(vm_->AgentTarget(), grpc::InsecureChannelCredentials());
  auto stub = pb::StorageAgent::NewStub(channel);
  std::atomic<int> exhausted{0}, gave_up{0};
  std::vector<std::thread> callers;
  // 24 callers that stay 20 s each: whatever the machine's load, all are in
  // flight together long enough for the 17th and later to be answered.
  for (int i = 0; i < 24; ++i) {
    callers.emplace_back([&, i] {
      auto req = FsRequest(Cat("ghost", i), "1d/00", "ext4");
      req.set_device_timeout_ms(120000);  // the agent would wait 2 minutes...
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));  // ...the caller 20 s
      pb::ActivateVolumeResponse resp;
      grpc::Status st = stub->ActivateVolume(&ctx, req, &resp);
      if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++exhausted;
      if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) ++gave_up;
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_GT(exhausted.load(), 0) << "no cap on concurrent activations";
  EXPECT_GT(gave_up.load(), 0);
  // The abandoned calls noticed their callers left: a real activation gets a
  // slot well within their 2-minute device timeout.
  std::string pci = Plug("after-ghosts", 96 * MiB);
  grpc::Status st;
  for (int attempt = 0; attempt < 20; ++attempt) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    pb::ActivateVolumeResponse resp;
    st = stub->ActivateVolume(&ctx, FsRequest("after-ghosts", pci, "ext4"), &resp);
    if (st.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  EXPECT_EQ(Guest("ls /run/cocostorage/volumes"), "after-ghosts.json\n");
  ASSERT_TRUE(agent_->Deactivate("after-ghosts").ok());
  ExpectNoLeftovers();
}

// A symlink planted under the storage root used to make the agent mount (and
// mknod) outside it, even over its own state directory, which then hid its
// records. Targets are resolved without following symlinks now, and must sit
// directly below the root.
TEST_F(AgentVmTest, SymlinkedOrNestedTargetsAreRefused) {
  std::string pci = Plug("symlink", 96 * MiB);
  ASSERT_EQ(GuestExit(Cat("ln -sfn /run/cocostorage/volumes ", kStorageRoot, "/evil && ln -sfn /run/cocostorage ",
                          kStorageRoot, "/evil.blk")),
            0);
  auto req = FsRequest("symlink", pci, "ext4");
  req.set_target_path(Cat(kStorageRoot, "/evil"));
  auto s = agent_->Activate(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  auto blk = BlockRequest("symlink", pci);
  blk.set_target_path(Cat(kStorageRoot, "/evil.blk"));
  s = agent_->Activate(blk);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  req.set_target_path(Cat(kStorageRoot, "/evil/x"));
  EXPECT_EQ(agent_->Activate(req).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // Nothing was mounted or created outside the root; the records are visible.
  EXPECT_EQ(Guest("grep -c ' /run/cocostorage' /proc/mounts || true"), "0\n");
  EXPECT_EQ(Guest("find /run/cocostorage -type b | wc -l"), "0\n");
  ASSERT_EQ(GuestExit(Cat("rm -f ", kStorageRoot, "/evil ", kStorageRoot, "/evil.blk")), 0);
  ASSERT_TRUE(agent_->Activate(FsRequest("symlink", pci, "ext4")).ok());
  ASSERT_TRUE(agent_->Deactivate("symlink").ok());
  ExpectNoLeftovers();
}

// The way an unmodified kata-agent gets here: api.SecureMountService/
// SecureMount over ttrpc on the CDH socket, made by the real Go ttrpc client
// in the guest with kata-agent's exact request (deviceId MAJ:MIN, mount point
// = storage dir + base64url(PCI path), its mkfsOpts). The same pipeline as
// our API: admitted, activated, mounted; a refused request touches nothing.
TEST_F(AgentVmTest, KataAgentsSecureMountCallActivatesTheDisk) {
  std::string pci = Plug("smount", 512 * MiB);
  auto disk = vm_->WaitForDisk("smount");  // kata-agent resolves MAJ:MIN once the disk is there
  ASSERT_TRUE(disk.ok()) << disk.status();
  std::string devno = Guest(Cat("cat /sys/block/", disk->substr(disk->rfind('/') + 1), "/dev"));
  while (!devno.empty() && devno.back() == '\n') devno.pop_back();
  ASSERT_FALSE(devno.empty());
  const std::string mount_point = SecureMountPoint(pci);
  // Asking for no integrity is refused by the agent's minimum, before anything.
  auto r = vm_->Exec(Cat("coco-kata-securemount -device ", devno, " -mount-point ", mount_point, " -integrity false"),
                     std::chrono::minutes(2), {.merge_output = true});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 7) << r->out;  // PERMISSION_DENIED
  EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n");
  // The real request.
  r = vm_->Exec(Cat("coco-kata-securemount -device ", devno, " -mount-point ", mount_point), std::chrono::minutes(3),
                {.merge_output = true});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << r->out;
  EXPECT_EQ(r->out, "ok\n");
  EXPECT_NE(Guest(Cat("grep ' ", mount_point, " ' /proc/mounts")).find("nosuid,nodev"), std::string::npos)
      << Guest("cat /proc/mounts");
  ASSERT_EQ(GuestExit(Cat("echo from-kata > ", mount_point,
                          "/f && sync && echo 3 > /proc/sys/vm/drop_caches && "
                          "grep -q from-kata ",
                          mount_point, "/f")),
            0);
  std::string id = SecureMountVolumeId(pci);
  while (id.back() == '=') id.pop_back();
  pb::Volume v;
  ASSERT_TRUE(agent_->Get(id, &v).ok());
  EXPECT_EQ(v.state(), pb::VOLUME_STATE_ACTIVE) << v.message();
  EXPECT_EQ(v.integrity_algorithm(), "hmac(sha256)");
  EXPECT_EQ(v.mapped_device(), Cat("/dev/mapper/coco-", id));
  EXPECT_EQ(v.target_path(), mount_point);
  // kata-agent may call again (a container restart): the same answer.
  r = vm_->Exec(Cat("coco-kata-securemount -device ", devno, " -mount-point ", mount_point), std::chrono::minutes(3),
                {.merge_output = true});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0) << r->out;
  // (kata-agent never tears down; the agent's own API does here.)
  ASSERT_TRUE(agent_->Deactivate(id).ok());
  ExpectNoLeftovers();
}

}  // namespace
}  // namespace cocostorage::vmtest
