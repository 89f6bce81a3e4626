#include "device/resolver.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <thread>
#include <vector>

#include "cocostorage/common/fs_util.h"

namespace cocostorage::agent {
namespace {

// A fake /sys and /dev: one virtio disk behind root port 00:02.0 at 01:00.0.
class ResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/coco-sysfs-XXXXXX";
    root_ = mkdtemp(tmpl);
    sys_ = root_ + "/sys";
    dev_ = root_ + "/dev";
    ASSERT_TRUE(MakeDirs(dev_).ok());
  }

  void AddDisk(const std::string& name, unsigned minor, const std::string& serial, uint64_t sectors) {
    std::string pci = sys_ + "/devices/pci0000:00/0000:00:02.0/0000:01:00.0/virtio3";
    ASSERT_TRUE(MakeDirs(pci + "/block/" + name).ok());
    std::string blk = sys_ + "/block/" + name;
    ASSERT_TRUE(MakeDirs(blk).ok());
    ASSERT_TRUE(AtomicWriteFile(blk + "/size", std::to_string(sectors) + "\n").ok());
    ASSERT_TRUE(AtomicWriteFile(blk + "/dev", "254:" + std::to_string(minor) + "\n").ok());
    ASSERT_TRUE(AtomicWriteFile(blk + "/serial", serial + "\n").ok());
    ASSERT_TRUE(MakeDirs(sys_ + "/dev/block").ok());
    std::string link = sys_ + "/dev/block/254:" + std::to_string(minor);
    ASSERT_EQ(
        symlink(("../../devices/pci0000:00/0000:00:02.0/0000:01:00.0/virtio3/block/" + name).c_str(), link.c_str()), 0);
    if (geteuid() == 0) {
      ASSERT_EQ(mknod((dev_ + "/" + name).c_str(), S_IFBLK | 0600, makedev(254, minor)), 0);
    }
  }

  // A fake steady clock that only the resolver's sleeps advance.
  SysfsDeviceResolver Resolver(int* sleeps = nullptr) {
    WaitClock clock{[this] { return now_; },
                    [this, sleeps](std::chrono::milliseconds d) {
                      now_ += d;
                      if (sleeps) ++*sleeps;
                    }};
    return SysfsDeviceResolver(sys_, dev_, clock, [this](const std::string&) {
      return busy_probes_ > 0 ? (--busy_probes_, busy_errno_) : probe_result_;
    });
  }
  int busy_probes_ = 0;
  int busy_errno_ = EBUSY;
  int probe_result_ = 0;
  std::chrono::steady_clock::time_point now_{};

  std::string root_, sys_, dev_;
};

TEST_F(ResolverTest, FindsDiskByPciPathSerialAndNumber) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for mknod";
  AddDisk("vdb", 16, "vol-abc", 2048);
  auto r = Resolver();
  for (DeviceId id : {DeviceId{DeviceIdKind::kPciPath, "02/00"}, DeviceId{DeviceIdKind::kSerial, "vol-abc"},
                      DeviceId{DeviceIdKind::kDevNumber, "254:16"}}) {
    auto d = r.WaitFor(id, std::chrono::milliseconds(0), {});
    ASSERT_TRUE(d.ok()) << id.Describe() << ": " << d.status();
    EXPECT_EQ(d->name, "vdb");
    EXPECT_EQ(d->dev_path, dev_ + "/vdb");
    EXPECT_EQ(d->size_bytes, 2048u * 512);
    EXPECT_EQ(d->DevNumber(), "254:16");
  }
}

TEST_F(ResolverTest, WaitsWhileTheKernelStillHoldsANewDisk) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for mknod";
  AddDisk("vdb", 16, "s", 2048);
  int sleeps = 0;
  busy_probes_ = 3;
  auto r = Resolver(&sleeps);
  ASSERT_TRUE(r.WaitFor({DeviceIdKind::kSerial, "s"}, std::chrono::milliseconds(1000), {}).ok());
  EXPECT_EQ(sleeps, 3);
  busy_probes_ = 1000;
  EXPECT_EQ(r.WaitFor({DeviceIdKind::kSerial, "s"}, std::chrono::milliseconds(200), {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// Seen in the VM: under concurrent hot-plug a new disk answered ENXIO on open
// and the agent gave up at once with NOT_FOUND.
TEST_F(ResolverTest, TransientOpenErrorsMeanNotReadyYet) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for mknod";
  AddDisk("vdb", 16, "s", 2048);
  for (int err : {ENXIO, ENODEV, ENOENT}) {
    int sleeps = 0;
    busy_probes_ = 4;
    busy_errno_ = err;
    auto r = Resolver(&sleeps);
    auto d = r.WaitFor({DeviceIdKind::kSerial, "s"}, std::chrono::milliseconds(1000), {});
    ASSERT_TRUE(d.ok()) << err << ": " << d.status();
    EXPECT_EQ(sleeps, 4);
  }
  busy_probes_ = 1000;
  busy_errno_ = ENXIO;
  auto r = Resolver();
  auto d = r.WaitFor({DeviceIdKind::kSerial, "s"}, std::chrono::milliseconds(200), {});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(d.status().message().find("did not become ready"), std::string::npos) << d.status();
  probe_result_ = EACCES;  // not transient: reported at once
  busy_probes_ = 0;
  EXPECT_EQ(r.WaitFor({DeviceIdKind::kSerial, "s"}, std::chrono::milliseconds(200), {}).status().code(),
            absl::StatusCode::kPermissionDenied);
}

// The deadline is elapsed time, not a count of sleeps: a sleep that
// oversleeps (a loaded guest) shortens the number of polls, not the wait.
TEST_F(ResolverTest, DeadlineIsElapsedTimeNotSleepCount) {
  int sleeps = 0;
  WaitClock clock{[this] { return now_; },
                  [this, &sleeps](std::chrono::milliseconds d) {
                    now_ += d * 4;  // every sleep takes 4x longer than asked
                    ++sleeps;
                  }};
  SysfsDeviceResolver r(sys_, dev_, clock, [](const std::string&) { return 0; });
  auto start = now_;
  EXPECT_EQ(r.WaitFor({DeviceIdKind::kPciPath, "03/00"}, std::chrono::milliseconds(1000), {}).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(sleeps, 5);
  EXPECT_LT(now_ - start, std::chrono::milliseconds(1300));
}

// One resolver serves concurrent activations (no per-call state in members;
// the TSan build checks this test).
TEST_F(ResolverTest, ConcurrentWaitsShareOneResolver) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for mknod";
  AddDisk("vdb", 16, "s", 2048);
  std::atomic<int> calls{0};
  SysfsDeviceResolver r(sys_, dev_, WaitClock::Real(),
                        [&](const std::string&) { return ++calls % 3 == 0 ? 0 : EBUSY; });
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) ok += r.WaitFor({DeviceIdKind::kSerial, "s"}, std::chrono::seconds(5), {}).ok();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 20);
}

// Hundreds of abandoned calls for a disk that never appears used to keep the
// vCPUs busy long after the clients left.
TEST_F(ResolverTest, ACancelledCallerStopsTheWait) {
  int sleeps = 0;
  auto r = Resolver(&sleeps);
  auto d = r.WaitFor({DeviceIdKind::kPciPath, "03/00"}, std::chrono::minutes(5), [&] { return sleeps >= 3; });
  EXPECT_EQ(d.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(sleeps, 3);
}

TEST_F(ResolverTest, WaitsThenTimesOutWithDeadlineExceeded) {
  int sleeps = 0;
  auto r = Resolver(&sleeps);
  auto d = r.WaitFor({DeviceIdKind::kPciPath, "03/00"}, std::chrono::milliseconds(500), {});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(sleeps, 10);  // 50 ms polls
}

TEST_F(ResolverTest, ZeroSizeMeansNotReadyYet) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for mknod";
  AddDisk("vdc", 32, "s", 0);
  auto r = Resolver();
  EXPECT_EQ(r.WaitFor({DeviceIdKind::kSerial, "s"}, std::chrono::milliseconds(100), {}).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ResolverTest, RefusesNonVirtioAndPartitions) {
  ASSERT_TRUE(MakeDirs(sys_ + "/dev/block").ok());
  ASSERT_EQ(symlink("../../devices/virtual/block/dm-0", (sys_ + "/dev/block/253:0").c_str()), 0);
  auto r = Resolver();
  EXPECT_EQ(r.WaitFor({DeviceIdKind::kDevNumber, "253:0"}, std::chrono::milliseconds(0), {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(symlink("../../devices/pci0000:00/0000:00:02.0/0000:01:00.0/virtio3/block/vdb/vdb1",
                    (sys_ + "/dev/block/254:17").c_str()),
            0);
  EXPECT_EQ(r.WaitFor({DeviceIdKind::kDevNumber, "254:17"}, std::chrono::milliseconds(0), {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// Kata's default block driver for QEMU is virtio-scsi: the disk kata-agent
// names by MAJ:MIN is then an sdX whole disk, accepted like a vdX one; its
// partitions and other devices are not.
TEST_F(ResolverTest, AcceptsWholeScsiDisksByNumberOnly) {
  const std::string scsi = "../../devices/pci0000:00/0000:00:1c.0/virtio2/host0/target0:0:0/0:0:0:0/block/";
  ASSERT_TRUE(MakeDirs(sys_ + "/block/sda").ok());
  ASSERT_TRUE(AtomicWriteFile(sys_ + "/block/sda/size", "4096\n").ok());
  ASSERT_TRUE(AtomicWriteFile(sys_ + "/block/sda/dev", "8:0\n").ok());
  ASSERT_TRUE(MakeDirs(sys_ + "/dev/block").ok());
  ASSERT_EQ(symlink((scsi + "sda").c_str(), (sys_ + "/dev/block/8:0").c_str()), 0);
  ASSERT_EQ(symlink((scsi + "sda/sda1").c_str(), (sys_ + "/dev/block/8:1").c_str()), 0);
  ASSERT_EQ(symlink("../../devices/pci0000:00/0000:00:1f.2/ata1/host1/target1:0:0/1:0:0:0/block/sr0",
                    (sys_ + "/dev/block/11:0").c_str()),
            0);
  if (geteuid() == 0) {
    ASSERT_EQ(mknod((dev_ + "/sda").c_str(), S_IFBLK | 0600, makedev(8, 0)), 0);
  }
  auto r = Resolver();
  if (geteuid() == 0) {
    auto d = r.WaitFor({DeviceIdKind::kDevNumber, "8:0"}, std::chrono::milliseconds(0), {});
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->name, "sda");
    EXPECT_EQ(d->size_bytes, 4096u * 512);
  }
  EXPECT_EQ(r.WaitFor({DeviceIdKind::kDevNumber, "8:1"}, std::chrono::milliseconds(0), {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.WaitFor({DeviceIdKind::kDevNumber, "11:0"}, std::chrono::milliseconds(0), {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(DeviceIdTest, SyntaxIsChecked) {
  EXPECT_TRUE(ValidateDeviceId({DeviceIdKind::kPciPath, "02/00"}).ok());
  EXPECT_TRUE(ValidateDeviceId({DeviceIdKind::kPciPath, "1f"}).ok());
  for (const char* bad : {"2/0", "02/00/", "../00", "02/0g", "", "02/00/01/02/03"}) {
    EXPECT_EQ(ValidateDeviceId({DeviceIdKind::kPciPath, bad}).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ValidateDeviceId({DeviceIdKind::kSerial, "a/b"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateDeviceId({DeviceIdKind::kDevNumber, "8"}).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cocostorage::agent
