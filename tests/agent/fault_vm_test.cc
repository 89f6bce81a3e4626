// Faults from the host, injected for real (issue 15): QEMU's blkdebug driver
// fails chosen reads, writes and flushes, a throttle filter makes a disk very
// slow, a backing file on a tiny host tmpfs runs out of space, and device_del
// pulls a disk away while it is mounted or being activated. For ephemeral
// volumes, in every case: the guest sees an error and never wrong data, the
// agent's RPC fails with a clear code (or the volume is reported DEGRADED),
// no call outlives its deadline, nothing of ours is left after deactivation,
// and the agent process is the same one at the end.
//
// Each case prints one "FAULT-SUMMARY" line (and records the same figures as
// test properties): failed requests QEMU counted on the device, bytes checked
// against checksums, time from the fault to the first error.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <chrono>
#include <future>
#include <map>
#include <thread>

#include "agent_vm_support.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::vmtest {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr uint64_t MiB = 1ull << 20;

int64_t MsSince(Clock::time_point t) { return std::chrono::duration_cast<milliseconds>(Clock::now() - t).count(); }

// Every request of these kinds fails with EIO.
std::vector<BlkdebugRule> FailAll(std::initializer_list<const char*> iotypes) {
  std::vector<BlkdebugRule> rules;
  for (const char* t : iotypes) rules.push_back({.iotype = t});
  return rules;
}

class FaultVmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("coco-fault-vm"));
    GuestVmOptions opts;
    opts.memory_mib = 1536;
    opts.root_ports = 16;
    auto vm = GuestVm::Start(opts);
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_ = vm->release();
    ASSERT_TRUE(vm_->WaitAgentListening().ok()) << vm_->ConsoleTail();
    agent_ = new AgentClient(vm_->AgentTarget());
    agent_pid_ = new std::string(GuestPid());
    ASSERT_FALSE(agent_pid_->empty());
  }

  static void TearDownTestSuite() {
    delete agent_;
    delete vm_;
    if (dir_) rmdir(dir_->c_str());
    delete dir_;
    delete agent_pid_;
  }

  void TearDown() override {
    if (vm_ == nullptr) return;
    // Whatever a case left (it may have stopped at a failed assertion): its
    // volumes deactivated, its faults cleared, its disks unplugged, so that
    // one case's failure cannot fail the next one's leftover checks.
    for (const auto& id : volumes_) {
      grpc::Status d = OneShot(seconds(150)).Deactivate(id);
      if (!d.ok()) ADD_FAILURE() << "clean-up: Deactivate(" << id << "): " << d.error_message();
    }
    for (const auto& [id, fault_node] : disks_) {
      if (fault_node) (void)vm_->SetFaults(id, {});
      if (Status u = vm_->Unplug(id); !u.ok()) ADD_FAILURE() << "clean-up: Unplug(" << id << "): " << u;
    }
    disks_.clear();
    images_.clear();
    if (!tmpfs_.empty()) {
      EXPECT_EQ(umount(tmpfs_.c_str()), 0) << strerror(errno);
      rmdir(tmpfs_.c_str());
    }
    // The agent never crashed: the respawn loop would have a new pid.
    EXPECT_EQ(GuestPid(), *agent_pid_) << "the agent restarted during the case";
    pb::AgentInfo info;
    EXPECT_TRUE(OneShot(seconds(20)).Info(&info).ok()) << "agent unresponsive after the case";
    (void)vm_->Exec("dmesg -c > /dev/null");
    if (HasFailure()) std::cerr << AgentLogTail(vm_) << vm_->ConsoleTail(4000);
  }

  static std::string GuestPid() {
    auto pid = vm_->Exec("cat /run/agent.pid");
    return pid.ok() ? pid->out : "";
  }

  // A client with one attempt and a bounded deadline: a fault must surface as
  // the call's status, not be retried away.
  static AgentClient OneShot(milliseconds deadline) {
    return AgentClient(vm_->AgentTarget(), RetryPolicy{.attempts = 1, .deadline = deadline});
  }

  std::string Plug(const std::string& name, uint64_t bytes, HotplugOptions opts, const std::string& dir = "") {
    images_.push_back(std::make_unique<SparseImage>(dir.empty() ? *dir_ : dir, name, bytes));
    opts.werror = opts.werror.empty() ? "report" : opts.werror;
    opts.rerror = opts.rerror.empty() ? "report" : opts.rerror;
    auto pci = vm_->Hotplug(images_.back()->path(), name, name, opts);
    EXPECT_TRUE(pci.ok()) << pci.status();
    if (pci.ok()) disks_[name] = opts.fault_node || !opts.faults.empty();
    return pci.ok() ? *pci : "";
  }
  Status Unplug(const std::string& name) {
    disks_.erase(name);
    return vm_->Unplug(name);
  }
  // The case uses volume `id`: TearDown deactivates it (a no-op if gone).
  void Uses(const std::string& id) { volumes_.push_back(id); }
  std::string StateOf(const std::string& id, pb::Volume* v) {
    grpc::Status g = OneShot(seconds(30)).Get(id, v);
    if (!g.ok()) return Cat("GetVolume failed: ", g.error_message());
    return pb::VolumeState_Name(v->state()) + (v->message().empty() ? "" : " (" + v->message() + ")");
  }

  std::string Guest(const std::string& cmd) {
    auto r = vm_->Exec(cmd, std::chrono::minutes(3), {.merge_output = true});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->out : "";
  }
  ExecResult GuestRun(const std::string& cmd) {
    auto r = vm_->Exec(cmd, std::chrono::minutes(3), {.merge_output = true});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ExecResult{};
  }

  // Failed requests QEMU's device model accounted for (query-blockstats).
  int64_t FailedOps(const std::string& id) {
    auto r = vm_->Qmp().Execute("query-blockstats");
    if (!r.ok()) return -1;
    for (const auto& dev : *r) {
      if (dev.value("node-name", "") != id + "-blk" &&
          dev.value("qdev", "").find("/" + id + "/") == std::string::npos) {
        continue;
      }
      const auto& st = dev["stats"];
      return st.value("failed_rd_operations", 0) + st.value("failed_wr_operations", 0) +
             st.value("failed_flush_operations", 0);
    }
    return -1;
  }

  void ExpectNoLeftovers() {
    EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n") << Guest("dmsetup ls");
    EXPECT_EQ(Guest("find /run/cocostorage/headers /run/cocostorage/guard /run/cocostorage/volumes -type f | wc -l"),
              "0\n");
    EXPECT_EQ(Guest("cat /sys/block/loop*/loop/backing_file 2>/dev/null | grep -c . || true"), "0\n");
    EXPECT_EQ(Guest(Cat("grep -c ", kStorageRoot, " /proc/mounts || true")), "0\n");
  }

  // A clear failure: a definite code with a message, not UNKNOWN or OK.
  static void ExpectClearError(const grpc::Status& s) {
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.error_code(), grpc::StatusCode::UNKNOWN) << s.error_message();
    EXPECT_FALSE(s.error_message().empty());
  }

  void Summary(const std::string& name, int64_t faults, uint64_t bytes_verified, int64_t ms_to_error,
               const std::string& outcome) {
    RecordProperty("faults_injected", std::to_string(faults));
    RecordProperty("bytes_verified", std::to_string(bytes_verified));
    RecordProperty("ms_to_error", std::to_string(ms_to_error));
    RecordProperty("outcome", outcome);
    std::cout << "FAULT-SUMMARY case=" << name << " faults=" << faults << " bytes_verified=" << bytes_verified
              << " ms_to_error=" << ms_to_error << " outcome=\"" << outcome << "\"" << std::endl;
  }

  // Writes `mib` MiB of random data to <mnt>/<file>, syncs, and keeps its
  // checksum in the guest's /tmp.
  void WriteChecked(const std::string& mnt, const std::string& file, int mib) {
    ASSERT_EQ(
        GuestRun(Cat("dd if=/dev/urandom of=", mnt, "/", file, " bs=1M count=", mib,
                     " conv=fsync 2>/dev/null && md5sum ", mnt, "/", file, " | cut -d' ' -f1 > /tmp/", file, ".md5"))
            .exit_code,
        0);
  }
  // Reads the file back uncached. Returns 1 if it matched, 0 if the read
  // failed; a read that returns other bytes fails the test (wrong data).
  int ReadBack(const std::string& mnt, const std::string& file) {
    const std::string f = Cat(mnt, "/", file);
    ExecResult r =
        GuestRun(Cat("echo 3 > /proc/sys/vm/drop_caches; cat ", f, " | md5sum | cut -d' ' -f1 > /tmp/", file,
                     ".now; cmp -s /tmp/", file, ".md5 /tmp/", file, ".now && echo MATCH || cat ", f, " > /dev/null"));
    if (r.out.find("MATCH") != std::string::npos) return 1;
    // Not the same bytes: acceptable only if the read itself failed.
    EXPECT_NE(r.exit_code, 0) << "read of " << file << " succeeded with different content:\n" << r.out;
    return 0;
  }

  static std::string* dir_;
  static GuestVm* vm_;
  static AgentClient* agent_;
  static std::string* agent_pid_;
  std::vector<std::unique_ptr<SparseImage>> images_;
  std::map<std::string, bool> disks_;  // plugged by this case -> has a blkdebug node
  std::vector<std::string> volumes_;
  std::string tmpfs_;  // a host tmpfs this case mounted
};

std::string* FaultVmTest::dir_ = nullptr;
GuestVm* FaultVmTest::vm_ = nullptr;
AgentClient* FaultVmTest::agent_ = nullptr;
std::string* FaultVmTest::agent_pid_ = nullptr;

// 1. Writes to the first 4 KiB of the disk (where dm-integrity's superblock
// goes) fail while the volume is provisioned; then writes every 64 KiB over
// the rest. Both activations fail cleanly; with the faults cleared the same disk
// activates.
TEST_F(FaultVmTest, WriteEioDuringActivation) {
  const std::string id = "f-act";
  Uses(id);
  std::vector<BlkdebugRule> head;
  for (int64_t sec = 0; sec < 8; ++sec) head.push_back({.iotype = "write", .sector = sec});
  std::string pci = Plug(id, 128 * MiB, {.fault_node = true, .faults = head});
  ASSERT_FALSE(pci.empty());
  ASSERT_TRUE(vm_->WaitForDisk(id).ok());

  auto t0 = Clock::now();
  grpc::Status s = OneShot(seconds(120)).Activate(FsRequest(id, pci, "ext4"));
  const int64_t ms = MsSince(t0);
  ExpectClearError(s);
  const std::string code1 = Cat(static_cast<int>(s.error_code()), ": ", s.error_message().substr(0, 120));
  pb::Volume v;
  EXPECT_EQ(agent_->Get(id, &v).error_code(), grpc::StatusCode::NOT_FOUND);
  ExpectNoLeftovers();
  const int64_t faults1 = FailedOps(id);
  EXPECT_GT(faults1, 0);

  // Every 64 KiB from 1 MiB to the end: whatever provisioning writes there.
  std::vector<BlkdebugRule> spread;
  for (int64_t sec = 2048; sec < 128 * 2048; sec += 128) spread.push_back({.iotype = "write", .sector = sec});
  ASSERT_TRUE(vm_->SetFaults(id, spread).ok());
  t0 = Clock::now();
  s = OneShot(seconds(120)).Activate(FsRequest(id, pci, "ext4"));
  const int64_t ms2 = MsSince(t0);
  ExpectClearError(s);
  const std::string code2 = Cat(static_cast<int>(s.error_code()), ": ", s.error_message().substr(0, 120));
  ExpectNoLeftovers();
  const int64_t faults2 = FailedOps(id) - faults1;

  // The fault clears: the same disk now provisions and holds data.
  ASSERT_TRUE(vm_->SetFaults(id, {}).ok());
  pb::Volume vol;
  s = OneShot(seconds(120)).Activate(FsRequest(id, pci, "ext4"), &vol);
  ASSERT_TRUE(s.ok()) << s.error_message();
  WriteChecked(vol.target_path(), "a", 4);
  EXPECT_EQ(ReadBack(vol.target_path(), "a"), 1);
  ASSERT_TRUE(agent_->Deactivate(id).ok());
  ExpectNoLeftovers();
  ASSERT_TRUE(Unplug(id).ok());
  Summary("write-eio-activation-head", faults1, 0, ms, Cat("code ", code1));
  Summary("write-eio-activation-data", faults2, 4 * MiB, ms2, Cat("code ", code2, "; retry after clearing OK"));
}

// 2. Reads and writes fail under load after activation. What this may cost an
// ephemeral volume: if the zero guard's thin pool has to commit its metadata
// while the fault lasts (the commit flushes the data device, and
// dm-integrity's flush writes its tags, which fail) it aborts the transaction
// and stays read-only for good: the volume is DEGRADED and data synced before
// the fault can stay unreadable after it clears, never wrong. Deactivation cleans up and the
// same disk provisions a new volume.
TEST_F(FaultVmTest, ReadWriteEioUnderLoad) {
  const std::string id = "f-load";
  Uses(id);
  std::string pci = Plug(id, 128 * MiB, {.fault_node = true});
  pb::Volume vol;
  grpc::Status s = OneShot(seconds(120)).Activate(FsRequest(id, pci, "ext4"), &vol);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string mnt = vol.target_path();
  WriteChecked(mnt, "a", 16);
  ASSERT_EQ(ReadBack(mnt, "a"), 1);

  ASSERT_TRUE(vm_->SetFaults(id, FailAll({"read", "write"})).ok());
  auto t0 = Clock::now();
  ExecResult w = GuestRun(Cat("dd if=/dev/urandom of=", mnt, "/b bs=1M count=16 conv=fsync"));
  const int64_t ms = MsSince(t0);
  EXPECT_NE(w.exit_code, 0) << "a write through a failing disk succeeded:\n" << w.out;
  // Reading under the fault: an error or the right bytes, nothing else.
  const int during = ReadBack(mnt, "a");
  const int64_t faults = FailedOps(id);
  EXPECT_GT(faults, 0);
  pb::Volume v;
  // Recorded, not asserted: DEGRADED once a layer gave up (the pool, the
  // file system); while the disk merely fails requests nothing records that
  // the agent can read, and it says ACTIVE.
  const std::string state_during = StateOf(id, &v);

  // The fault clears: the data is the right bytes or an error, and the
  // volume stays DEGRADED while anything is wrong with it.
  ASSERT_TRUE(vm_->SetFaults(id, {}).ok());
  const int after = ReadBack(mnt, "a");
  const std::string state_after = StateOf(id, &v);
  if (after == 0) {
    EXPECT_EQ(v.state(), pb::VOLUME_STATE_DEGRADED) << state_after;
  }
  auto d0 = Clock::now();
  grpc::Status d = OneShot(seconds(120)).Deactivate(id);
  EXPECT_TRUE(d.ok()) << d.error_message();
  const int64_t deact_ms = MsSince(d0);
  ExpectNoLeftovers();

  // Recovery is a new volume on the same disk.
  s = OneShot(seconds(120)).Activate(FsRequest(id, pci, "ext4"), &vol);
  ASSERT_TRUE(s.ok()) << s.error_message();
  WriteChecked(vol.target_path(), "c", 4);
  EXPECT_EQ(ReadBack(vol.target_path(), "c"), 1);
  ASSERT_TRUE(agent_->Deactivate(id).ok());
  ExpectNoLeftovers();
  ASSERT_TRUE(Unplug(id).ok());
  Summary("read-write-eio-load", faults, (16 + 16 * during + 16 * after + 4) * MiB, ms,
          Cat("writer exit ", w.exit_code, "; GetVolume during: ", state_during,
              "; before-fault file after clearing: ", after ? "intact" : "unreadable (EIO)", "; deactivate ", deact_ms,
              " ms ", d.ok() ? "OK" : d.error_message(), "; same disk re-provisioned OK"));
}

// 3. One flush fails. blkdebug fires a flush rule on the format node's
// flush_to_disk event; a rule that stays armed cannot be cleared again,
// because blockdev-reopen (how SetFaults swaps rules) flushes through the
// failing node first and gives up ("Error flushing drive"), and every later
// flush fails too (the format node's flushed generation never catches up).
// So the rule fires once: the next flush that reaches the disk fails, which
// the device model counts and hands to the guest (werror=report). Which of
// the guest's flushes gets it (an fsync, the ext4 journal, the thin pool's
// commit) is up to the guest; every one is a write barrier whose failure must
// surface as an error, never as wrong data.
TEST_F(FaultVmTest, FailedFlush) {
  const std::string id = "f-flush";
  Uses(id);
  std::string pci = Plug(id, 128 * MiB, {.fault_node = true});
  pb::Volume vol;
  grpc::Status s = OneShot(seconds(120)).Activate(FsRequest(id, pci, "ext4"), &vol);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string mnt = vol.target_path();
  WriteChecked(mnt, "a", 4);
  const int64_t before = FailedOps(id);

  ASSERT_TRUE(vm_->SetFaults(id, {{.iotype = "flush", .once = true}}).ok());
  auto t0 = Clock::now();
  ExecResult w = GuestRun(Cat("dd if=/dev/urandom of=", mnt, "/b bs=1M count=4 conv=fsync"));
  const int64_t ms = MsSince(t0);
  // A flush went to the disk (dd's fsync at the latest) and failed there.
  const int64_t faults = FailedOps(id) - before;
  EXPECT_EQ(faults, 1) << "the armed flush fault did not fire exactly once";
  pb::Volume v;
  const std::string state_during = StateOf(id, &v);
  // The guest saw it: dd's fsync failed, or the layer that got the error
  // (thin pool, file system) shut down and the volume is DEGRADED.
  EXPECT_TRUE(w.exit_code != 0 || v.state() == pb::VOLUME_STATE_DEGRADED)
      << "a failed flush went unnoticed: dd exit " << w.exit_code << ", " << state_during << "\n"
      << w.out;
  // The rule is spent: clearing works (its reopen flushes successfully).
  ASSERT_TRUE(vm_->SetFaults(id, {}).ok());
  const int read = ReadBack(mnt, "a");
  const std::string state_after = StateOf(id, &v);
  if (read == 0) {
    EXPECT_EQ(v.state(), pb::VOLUME_STATE_DEGRADED) << state_after;
  }
  grpc::Status d = OneShot(seconds(120)).Deactivate(id);
  EXPECT_TRUE(d.ok()) << d.error_message();
  ExpectNoLeftovers();
  ASSERT_TRUE(Unplug(id).ok());
  Summary("failed-flush", faults, 4 * MiB * (1 + read), ms,
          Cat("dd exit ", w.exit_code, "; GetVolume after: ", state_during, "; before-fault file ",
              read ? "intact" : "unreadable (EIO)"));
}

// 4. The host file system fills up (a 40 MiB tmpfs under a 128 MiB image).
TEST_F(FaultVmTest, HostEnospc) {
  const std::string id = "f-nospc";
  Uses(id);
  const std::string small = Cat(*dir_, "/small");
  ASSERT_EQ(mkdir(small.c_str(), 0700), 0);
  ASSERT_EQ(mount("tmpfs", small.c_str(), "tmpfs", 0, "size=40m"), 0) << strerror(errno);
  tmpfs_ = small;
  std::string pci = Plug(id, 128 * MiB, {}, small);
  pb::Volume vol;
  grpc::Status s = OneShot(seconds(120)).Activate(FsRequest(id, pci, "ext4"), &vol);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string mnt = vol.target_path();
  WriteChecked(mnt, "a", 8);

  auto t0 = Clock::now();
  ExecResult w = GuestRun(Cat("dd if=/dev/urandom of=", mnt, "/b bs=1M count=80 conv=fsync"));
  const int64_t ms = MsSince(t0);
  EXPECT_NE(w.exit_code, 0) << "80 MiB fit in a 40 MiB host file system:\n" << w.out;
  const int64_t faults = FailedOps(id);
  EXPECT_GT(faults, 0);
  EXPECT_TRUE(vm_->Alive());  // werror=report: the VM was not paused
  const int read = ReadBack(mnt, "a");
  pb::Volume v;
  const std::string state_during = StateOf(id, &v);
  // Data lost is never reported ACTIVE.
  if (read == 0) {
    EXPECT_EQ(v.state(), pb::VOLUME_STATE_DEGRADED) << state_during;
  }
  grpc::Status d = OneShot(seconds(120)).Deactivate(id);
  EXPECT_TRUE(d.ok()) << d.error_message();
  ExpectNoLeftovers();
  ASSERT_TRUE(Unplug(id).ok());
  images_.clear();
  EXPECT_EQ(umount(small.c_str()), 0) << strerror(errno);
  rmdir(small.c_str());
  tmpfs_.clear();
  Summary("host-enospc", faults, 8 * MiB * (1 + read), ms,
          Cat("writer exit ", w.exit_code, "; before-fault file ", read ? "intact" : "unreadable",
              "; GetVolume during: ", state_during));
}

// 5a. The disk disappears while its volume is mounted.
TEST_F(FaultVmTest, DeviceGoneWhileMounted) {
  const std::string id = "f-gone";
  Uses(id);
  std::string pci = Plug(id, 128 * MiB, {});
  pb::Volume vol;
  grpc::Status s = OneShot(seconds(120)).Activate(FsRequest(id, pci, "ext4"), &vol);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string mnt = vol.target_path();
  WriteChecked(mnt, "a", 4);
  ASSERT_TRUE(Unplug(id).ok());
  ASSERT_TRUE(vm_->WaitForDiskGone(id).ok());

  auto t0 = Clock::now();
  ExecResult w = GuestRun(Cat("dd if=/dev/urandom of=", mnt, "/b bs=1M count=4 conv=fsync"));
  const int64_t ms = MsSince(t0);
  EXPECT_NE(w.exit_code, 0) << "a write to a removed disk succeeded:\n" << w.out;
  const int read = ReadBack(mnt, "a");
  pb::Volume v;
  ASSERT_TRUE(OneShot(seconds(30)).Get(id, &v).ok());
  const std::string state_during =
      pb::VolumeState_Name(v.state()) + (v.message().empty() ? "" : " (" + v.message() + ")");
  EXPECT_EQ(v.state(), pb::VOLUME_STATE_DEGRADED) << v.message();
  std::vector<pb::Volume> list;
  ASSERT_TRUE(OneShot(seconds(30)).List(&list).ok());

  grpc::Status d = OneShot(seconds(120)).Deactivate(id);
  EXPECT_TRUE(d.ok()) << d.error_message();
  ExpectNoLeftovers();

  // A new disk under the same id works.
  std::string pci2 = Plug("f-gone2", 128 * MiB, {});
  s = OneShot(seconds(120)).Activate(FsRequest(id, pci2, "ext4"), &vol);
  ASSERT_TRUE(s.ok()) << s.error_message();
  WriteChecked(vol.target_path(), "c", 4);
  EXPECT_EQ(ReadBack(vol.target_path(), "c"), 1);
  ASSERT_TRUE(agent_->Deactivate(id).ok());
  ExpectNoLeftovers();
  ASSERT_TRUE(Unplug("f-gone2").ok());
  Summary("device-gone-mounted", 1, 4 * MiB * (read + 1), ms,
          Cat("writer exit ", w.exit_code, "; GetVolume: ", state_during, "; deactivate ",
              d.ok() ? "OK" : d.error_message()));
}

// 5b. The disk disappears while its volume is being provisioned (throttled
// so that provisioning is still running when device_del lands).
TEST_F(FaultVmTest, DeviceGoneWhileActivating) {
  const std::string id = "f-gone-act";
  Uses(id);
  std::string pci = Plug(id, 128 * MiB, {.throttle = ThrottleLimits{.bps_total = 1 * MiB, .iops_total = 100}});
  ASSERT_TRUE(vm_->WaitForDisk(id).ok());
  auto t0 = Clock::now();
  auto pending =
      std::async(std::launch::async, [&] { return OneShot(seconds(150)).Activate(FsRequest(id, pci, "ext4")); });
  // Unplug once the agent has claimed the disk (its record exists).
  for (int i = 0; i < 600; ++i) {
    if (Guest("ls /run/cocostorage/volumes 2>/dev/null | grep -c f-gone-act || true") != "0\n") break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  std::this_thread::sleep_for(seconds(1));
  const int64_t unplug_at = MsSince(t0);
  ASSERT_TRUE(Unplug(id).ok());
  auto u0 = Clock::now();
  ASSERT_EQ(pending.wait_for(seconds(180)), std::future_status::ready) << "activation outlived its deadline";
  grpc::Status s = pending.get();
  const int64_t ms = MsSince(u0);
  ExpectClearError(s);
  pb::Volume v;
  grpc::Status g = OneShot(seconds(30)).Get(id, &v);
  // Failed activation: gone, or (if undoing failed) deactivatable.
  grpc::Status d = OneShot(seconds(120)).Deactivate(id);
  EXPECT_TRUE(d.ok()) << d.error_message();
  ExpectNoLeftovers();

  std::string pci2 = Plug("f-gone-act2", 128 * MiB, {});
  pb::Volume vol;
  grpc::Status s2 = OneShot(seconds(120)).Activate(FsRequest(id, pci2, "ext4"), &vol);
  ASSERT_TRUE(s2.ok()) << s2.error_message();
  ASSERT_TRUE(agent_->Deactivate(id).ok());
  ExpectNoLeftovers();
  ASSERT_TRUE(Unplug("f-gone-act2").ok());
  Summary("device-gone-activating", 1, 0, ms,
          Cat("unplugged ", unplug_at, " ms into activation; code ", static_cast<int>(s.error_code()), ": ",
              s.error_message().substr(0, 120), "; GetVolume after: ", static_cast<int>(g.error_code())));
}

// 6. A very slow disk: the caller's deadline ends the call; the agent keeps
// answering other calls meanwhile and cleans up afterwards.
TEST_F(FaultVmTest, SlowDeviceHitsDeadline) {
  const std::string id = "f-slow";
  Uses(id);
  std::string pci = Plug(id, 128 * MiB, {.throttle = ThrottleLimits{.bps_total = 256 * 1024, .iops_total = 20}});
  ASSERT_TRUE(vm_->WaitForDisk(id).ok());
  auto t0 = Clock::now();
  auto pending =
      std::async(std::launch::async, [&] { return OneShot(seconds(8)).Activate(FsRequest(id, pci, "ext4")); });
  // While it runs, other calls are answered.
  std::this_thread::sleep_for(seconds(2));
  pb::AgentInfo info;
  grpc::Status i = OneShot(seconds(10)).Info(&info);
  EXPECT_TRUE(i.ok()) << i.error_message();
  std::vector<pb::Volume> list;
  grpc::Status l = OneShot(seconds(10)).List(&list);
  EXPECT_TRUE(l.ok()) << l.error_message();
  ASSERT_EQ(pending.wait_for(seconds(60)), std::future_status::ready) << "the call outlived its deadline";
  grpc::Status s = pending.get();
  const int64_t ms = MsSince(t0);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();

  // The disk gets fast again; whatever the abandoned activation left is
  // deactivated (Deactivate waits for the activation to finish).
  ASSERT_TRUE(
      vm_->Qmp()
          .Execute("qom-set",
                   {{"path", "/objects/" + id + "-tg"}, {"property", "limits"}, {"value", nlohmann::json::object()}})
          .ok());
  auto d0 = Clock::now();
  bool was = false;
  grpc::Status d = OneShot(seconds(150)).Deactivate(id, &was);
  EXPECT_TRUE(d.ok()) << d.error_message();
  // The abandoned activation stopped at its next step and undid itself: at
  // 256 KiB/s provisioning (LUKS2 + dm-integrity superblock, mkfs) is still
  // far from the mount when the 8 s deadline passes.
  EXPECT_FALSE(was) << "the activation went on to the end after its caller left";
  const int64_t deact_ms = MsSince(d0);
  ExpectNoLeftovers();
  ASSERT_TRUE(Unplug(id).ok());
  Summary("slow-device-deadline", 0, 0, ms,
          Cat("code ", static_cast<int>(s.error_code()), "; Info/List during: ", i.ok() && l.ok() ? "OK" : "FAILED",
              "; abandoned activation ", was ? "ran to the end" : "stopped and undid itself",
              "; deactivate after un-throttling ", deact_ms, " ms"));
}

}  // namespace
}  // namespace cocostorage::vmtest
