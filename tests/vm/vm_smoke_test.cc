// Smoke test of the VM harness: boots one guest and checks everything later
// tests rely on (guest-exec, hot-plug with Kata PCI paths, device-mapper,
// dm-integrity + crypto, kernel-log scanning, the agent respawn loop).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cocostorage/common/strings.h"
#include "guest_vm.h"

namespace cocostorage::vmtest {
namespace {

using std::chrono::seconds;

class VmSmokeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    GuestVmOptions opts;
    opts.agent_env = {"COCO_SMOKE=1"};
    auto vm = GuestVm::Start(opts);
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_ = std::move(vm).value();
    std::fprintf(stderr, "guest ready %.1f s after QEMU start\n", vm_->BootSeconds());
    char tmpl[] = "/tmp/coco-vm-smoke.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  static void TearDownTestSuite() {
    vm_.reset();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  void TearDown() override {
    if (HasFailure() && vm_) {
      std::fprintf(stderr, "---- console tail (%s)\n%s\n----\n", vm_->ConsoleLogPath().c_str(),
                   vm_->ConsoleTail(6000).c_str());
    }
  }
  static std::string MakeImage(const std::string& name, off_t size = 64 << 20) {
    std::string path = dir_ + "/" + name;
    int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, size), 0);
    ::close(fd);
    return path;
  }
  GuestVm& vm() { return *vm_; }

  static std::unique_ptr<GuestVm> vm_;
  static std::string dir_;
};
std::unique_ptr<GuestVm> VmSmokeTest::vm_;
std::string VmSmokeTest::dir_;

TEST_F(VmSmokeTest, ExecReportsExitCodeOutputAndStdin) {
  auto r = vm().Exec("echo out; echo err >&2; exit 3");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");

  ExecOptions in;
  in.stdin_data = std::string("hello\0world", 11);
  r = vm().Exec("wc -c", seconds(30), in);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(std::string(TrimWhitespace(r->out)), "11");

  r = vm().Exec("sleep 30", std::chrono::milliseconds(500));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->timed_out);

  // Big outputs survive the trip.
  auto big = vm().ExecOk("head -c 5000000 /dev/zero");
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->size(), 5000000u);

  auto env = vm().ExecOk("echo $DM_DISABLE_UDEV; uname -r");
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->substr(0, 2), "1\n");
  EXPECT_FALSE(vm().ExecOk("false").ok());
}

TEST_F(VmSmokeTest, HotplugTwoDisksAndUnplugOne) {
  std::string a = MakeImage("a.img");
  std::string b = MakeImage("b.img");
  auto t0 = std::chrono::steady_clock::now();
  auto pa = vm().Hotplug(a, "vola", "serial-a");
  ASSERT_TRUE(pa.ok()) << pa.status();
  auto da = vm().WaitForDisk("serial-a");
  ASSERT_TRUE(da.ok()) << da.status();
  std::fprintf(stderr, "hot-plug to guest block device: %.2f s\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  auto pb = vm().Hotplug(b, "volb", "serial-b");
  ASSERT_TRUE(pb.ok()) << pb.status();
  auto db = vm().WaitForDisk("serial-b");
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ(*pa, "02/00");
  EXPECT_EQ(*pb, "03/00");
  EXPECT_NE(*da, *db);

  // The Kata PCI path "SS/DD" is root-bus slot SS, then device DD behind the
  // port: the block device must sit under exactly that sysfs path.
  for (const auto& [pci, dev] : {std::pair{*pa, *da}, std::pair{*pb, *db}}) {
    std::string slot = pci.substr(0, 2);
    std::string devno = pci.substr(3, 2);
    std::string cmd =
        Cat("ls -d /sys/devices/pci0000:00/0000:00:", slot, ".0/0000:*:", devno, ".0/virtio*/block/", dev.substr(5));
    auto r = vm().Exec(cmd);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 0) << cmd << "\n" << r->err;
  }
  auto serial = vm().ExecOk(Cat("cat /sys/block/", da->substr(5), "/serial"));
  ASSERT_TRUE(serial.ok()) << serial.status();
  EXPECT_EQ(std::string(TrimWhitespace(*serial)), "serial-a");
  auto size = vm().ExecOk(Cat("blockdev --getsize64 ", *db));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(std::string(TrimWhitespace(*size)), Cat(64 << 20));

  t0 = std::chrono::steady_clock::now();
  Status un = vm().Unplug("vola");
  ASSERT_TRUE(un.ok()) << un;
  std::fprintf(stderr, "unplug (device_del to DEVICE_DELETED): %.2f s\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  EXPECT_TRUE(vm().WaitForDiskGone("serial-a").ok());
  EXPECT_TRUE(vm().WaitForDisk("serial-b", seconds(1)).ok());
  EXPECT_FALSE(vm().Unplug("vola").ok());

  // The freed port is reused.
  auto pc = vm().Hotplug(a, "volc", "serial-c");
  ASSERT_TRUE(pc.ok()) << pc.status();
  EXPECT_EQ(*pc, "02/00");
  EXPECT_TRUE(vm().WaitForDisk("serial-c").ok());
  EXPECT_TRUE(vm().Unplug("volc").ok());
  EXPECT_TRUE(vm().Unplug("volb").ok());
}

TEST_F(VmSmokeTest, DeviceMapperWorks) {
  auto r = vm().ExecOk(
      "dmsetup create z --table '0 8 zero' && test -b /dev/mapper/z && "
      "dd if=/dev/mapper/z bs=4096 count=1 2>/dev/null | od -An -tx1 | sort -u && "
      "dmsetup remove z && dmsetup targets");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->find("zero"), std::string::npos) << *r;
  EXPECT_NE(r->find("crypt"), std::string::npos) << *r;
  EXPECT_NE(r->find("integrity"), std::string::npos) << *r;
  EXPECT_NE(r->find("thin-pool"), std::string::npos) << *r;
}

TEST_F(VmSmokeTest, LuksIntegrityAndKernelLogScan) {
  std::string img = MakeImage("luks.img");
  auto pci = vm().Hotplug(img, "volluks", "serial-luks");
  ASSERT_TRUE(pci.ok()) << pci.status();
  auto dev = vm().WaitForDisk("serial-luks");
  ASSERT_TRUE(dev.ok()) << dev.status();

  ExecOptions key;
  key.stdin_data = std::string(64, 'k');
  auto t0 = std::chrono::steady_clock::now();
  auto r = vm().Exec(Cat("cat > /tmp/smoke.key && "
                         "cryptsetup --batch-mode luksFormat --type luks2 --cipher aes-xts-plain64 "
                         "--sector-size 4096 --integrity hmac-sha256 --integrity-no-wipe "
                         "--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file=/tmp/smoke.key ",
                         *dev, " && cryptsetup open --key-file=/tmp/smoke.key ", *dev, " smoke"),
                     seconds(120), key);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << r->err;
  std::fprintf(stderr, "luksFormat+open (hmac-sha256, no wipe, 64 MiB): %.2f s\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  auto table = vm().ExecOk("dmsetup table --target integrity; dmsetup table smoke");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_NE(table->find("integrity"), std::string::npos) << *table;
  EXPECT_NE(table->find("hmac(sha256)"), std::string::npos) << *table;

  // Written data reads back; a never-written sector fails authentication.
  auto w = vm().ExecOk(
      "dd if=/dev/urandom of=/tmp/blk bs=4096 count=1 2>/dev/null && "
      "dd if=/tmp/blk of=/dev/mapper/smoke bs=4096 count=1 oflag=direct 2>/dev/null && "
      "dd if=/dev/mapper/smoke of=/tmp/back bs=4096 count=1 iflag=direct 2>/dev/null && "
      "cmp /tmp/blk /tmp/back");
  EXPECT_TRUE(w.ok()) << w.status();
  auto bad = vm().Exec("dd if=/dev/mapper/smoke of=/dev/null bs=4096 skip=100 count=1 iflag=direct");
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_NE(bad->exit_code, 0) << "reading an unwritten sector should fail";

  auto klog = vm().KernelLog();
  ASSERT_TRUE(klog.ok()) << klog.status();
  auto errors = GuestVm::IntegrityErrors(*klog);
  ASSERT_FALSE(errors.empty()) << *klog;
  bool aead = false;
  for (const auto& e : errors) aead = aead || e.find("INTEGRITY AEAD ERROR") != std::string::npos;
  EXPECT_TRUE(aead) << errors.front();

  EXPECT_TRUE(vm().ExecOk("cryptsetup close smoke").ok());
  EXPECT_TRUE(vm().Unplug("volluks").ok());
}

// Uses the placeholder agent so that this test does not depend on the real
// agent's behaviour; the real one is started again at the end.
TEST_F(VmSmokeTest, AgentRespawnLoop) {
  Status s = vm().StopAgent();
  ASSERT_TRUE(s.ok()) << s;
  auto pid = vm().ExecOk("cat /run/agent.pid 2>/dev/null; true");
  ASSERT_TRUE(pid.ok());
  EXPECT_EQ(*pid, "");
  s = vm().SetAgentCommandLine({"--listen=tcp://0.0.0.0:7001", "--smoke-marker"}, {"COCO_SMOKE=2"},
                               kPlaceholderAgentBinary);
  ASSERT_TRUE(s.ok()) << s;
  s = vm().StartAgent();
  ASSERT_TRUE(s.ok()) << s;
  auto args = vm().ExecOk(
      "tr '\\0' ' ' < /proc/$(cat /run/agent.pid)/cmdline; echo; "
      "tr '\\0' '\\n' < /proc/$(cat /run/agent.pid)/environ | grep COCO_SMOKE");
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_NE(args->find("--smoke-marker"), std::string::npos) << *args;
  EXPECT_NE(args->find("COCO_SMOKE=2"), std::string::npos) << *args;
  EXPECT_TRUE(vm().WaitAgentListening().ok());
  s = vm().KillAgent(SIGKILL);
  EXPECT_TRUE(s.ok()) << s;
  auto log = vm().AgentLog();
  ASSERT_TRUE(log.ok());
  EXPECT_NE(log->find("exited with status 137"), std::string::npos) << *log;

  // Back to the image's own agent with its default command line.
  ASSERT_TRUE(vm().StopAgent().ok());
  ASSERT_TRUE(
      vm().SetAgentCommandLine({"--listen=tcp://0.0.0.0:7001", "--storage-root=/run/kata-containers/sandbox/storage",
                                "--state-dir=/run/cocostorage", "--insecure-no-storage-policy"},
                               {})
          .ok());
  auto real = vm().Exec("test -x /usr/bin/cocostorage-agent");
  ASSERT_TRUE(real.ok());
  if (real->exit_code == 0) {
    EXPECT_TRUE(vm().StartAgent().ok());
  }
}

TEST(GuestVmStartTest, FailsCleanlyWithoutImageOrQemu) {
  GuestVmOptions opts;
  opts.kernel = "/nonexistent/vmlinuz";
  auto vm = GuestVm::Start(opts);
  EXPECT_EQ(vm.status().code(), absl::StatusCode::kNotFound) << vm.status();

  opts = GuestVmOptions{};
  opts.qemu_binary = "/bin/false";
  auto t0 = std::chrono::steady_clock::now();
  vm = GuestVm::Start(opts);
  EXPECT_FALSE(vm.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(10)) << vm.status();
}

TEST(IntegrityErrorsTest, FindsTypicalLines) {
  std::string log =
      "[    1.0] ok line\n"
      "[    2.0] device-mapper: crypt: dm-1: INTEGRITY AEAD ERROR, sector 800\n"
      "[    2.1] device-mapper: integrity: dm-0: Checksum failed at sector 0x40\n"
      "[    2.2] Buffer I/O error on dev dm-1, logical block 100, async page read\n"
      "[    2.3] EXT4-fs error (device dm-1): ext4_find_entry:1658: inode #2: comm ls: reading directory\n"
      "[    2.4] XFS (dm-1): Metadata corruption detected at xfs_dinode_verify+0x1a\n"
      "[    2.5] XFS (dm-1): Mounting V5 Filesystem\n";
  auto hits = GuestVm::IntegrityErrors(log);
  ASSERT_EQ(hits.size(), 5u);
  EXPECT_NE(hits[0].find("AEAD"), std::string::npos);
  EXPECT_NE(hits[4].find("corruption"), std::string::npos);
}

}  // namespace
}  // namespace cocostorage::vmtest
