// Crash consistency of persistent volumes (docs/design.md, "Persistent
// volumes" §4.7 and §5; test plan row "crash consistency", part (a)).
//
// PowerCutDuringFsyncedWrites: a KBS-keyed persistent volume on a host file.
// In the guest, coco-crash-writer (testing/vm/guest/crash_writer.cc) appends
// checksummed 64 KiB records and, after each fsync, prints the last durable
// seq on the serial console. The host kills QEMU (SIGKILL) at a random moment,
// boots a new VM on the same file and requires an open (never a create), every
// acknowledged record intact, nothing but expected bytes or zeros anywhere,
// e2fsck -fn clean, a full read of the volume without error and no kernel
// integrity error. "Acknowledged" means exactly: the host found the seq's
// console line in QEMU's console log after QEMU was dead, i.e. QEMU wrote it
// before the kill, and the guest printed it only after fsync returned.
// Iterations accumulate history on the one volume: default 3,
// COCOSTORAGE_CRASH_ITERATIONS=N for a soak; COCOSTORAGE_CRASH_SEED=S replays
// a run's kill delays.
//
// AgentKilledAtEachCreationPoint: the agent SIGKILLs itself at each commit
// point of a persistent creation; the restarted agent's retry finishes or
// redoes the creation (an open once the superblock says READY), and the
// volume then reopens.
//
// What this cannot show: SIGKILL of QEMU loses only what QEMU had not yet
// written; everything it wrote sits in the host page cache and reaches the
// backing file. It is not a power model for a disk that drops unflushed
// writes or tears sectors (that is part (b), the NBD power-cut server).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <regex>
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
using Clock = std::chrono::steady_clock;

constexpr uint64_t MiB = 1ull << 20;
constexpr char kKeyHex[] = "3a5f0c7e91d24b68a0f3e5c7d9b1a2c4e6f8091b2d3f4a5c6e7f8091a2b3c4d5";
constexpr char kCrashUri[] = "kbs:///default/keys/pv-crash";
constexpr char kPointUri[] = "kbs:///default/keys/pv-point";
constexpr uint64_t kRecordBytes = 64 * 1024;
// Two writers per iteration: the one whose acknowledgements are checked (an
// fsync every 8 records = 512 KiB, 4 MiB files) and a bulk one that fsyncs
// rarely (every 4 MiB, 16 MiB files), so the cut also finds much dirty,
// unsynced data in flight. Bulk run ids are 1000 + iteration.
struct WriterShape {
  int run_base;
  int sync_every;
  int records_per_file;
};
constexpr WriterShape kWriters[] = {{0, 8, 64}, {1000, 64, 256}};
// Iterations kept on the volume (older runs are checked a last time and
// deleted, which puts frees and directory updates into later crashes too).
constexpr int kKeepIterations = 2;

json Config() {
  return {{"resources", {{"default/keys/pv-crash", {{"hex", kKeyHex}}}, {"default/keys/pv-point", {{"hex", kKeyHex}}}}},
          {"allowed_tees", {"sample"}},
          {"policy", {{"default", "allow"}}}};
}

pb::ActivateVolumeRequest PersistentFs(const std::string& id, const std::string& pci, const std::string& uri) {
  pb::ActivateVolumeRequest r = FsRequest(id, pci, "ext4");
  r.mutable_key()->set_kbs_resource_uri(uri);
  r.set_device_timeout_ms(60000);
  return r;
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

// key=value words of one line ("crashw-verify run=3 ok=1 records=...").
std::map<std::string, std::string> Fields(const std::string& line) {
  std::map<std::string, std::string> out;
  std::istringstream in(line);
  for (std::string w; in >> w;) {
    auto eq = w.find('=');
    if (eq != std::string::npos) out[w.substr(0, eq)] = w.substr(eq + 1);
  }
  return out;
}

// The highest seq the console log acknowledges for `run` (-1: none). Only
// whole lines count: QEMU may have died in the middle of one.
long long AckedIn(const std::string& console, int run) {
  const std::regex line(Cat("crashw run=", run, " durable=([0-9]+)\r?\n"));
  long long acked = -1;
  for (auto it = std::sregex_iterator(console.begin(), console.end(), line); it != std::sregex_iterator(); ++it) {
    acked = std::max(acked, std::stoll((*it)[1].str()));
  }
  return acked;
}

class CrashVmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("coco-crash-vm"));
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
    auto vm = BootKbsGuest(*kbs_);
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_ = std::move(*vm);
    agent_ = new AgentClient(vm_->AgentTarget());
  }

  void TearDown() override {
    if (HasFailure() && vm_ != nullptr && vm_->Alive()) std::cerr << AgentLogTail(vm_.get());
  }

  std::string Guest(const std::string& cmd) {
    auto r = vm_->Exec(cmd, std::chrono::minutes(5), {.merge_output = true});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->out : "";
  }

  std::string LastAction(const std::string& id) { return LastActivationAction(vm_.get(), id); }

  // Unmounted, the volume's file system is clean and (with full_read) every
  // byte of the volume reads back (the guard serves never-written blocks as
  // zeros).
  void ExpectConsistentUnmounted(const std::string& id, bool full_read) {
    const std::string dev = Cat("/dev/mapper/coco-", id);
    EXPECT_EQ(Guest(Cat("umount ", kStorageRoot, "/", id, "; echo $?")), "0\n");
    auto fsck = vm_->Exec(Cat("e2fsck -fn ", dev), std::chrono::minutes(5), {.merge_output = true});
    ASSERT_TRUE(fsck.ok()) << fsck.status();
    EXPECT_EQ(fsck->exit_code, 0) << fsck->out;
    if (!full_read) return;
    auto read = vm_->Exec(Cat("dd if=", dev, " of=/dev/null bs=1M"), std::chrono::minutes(5), {.merge_output = true});
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(read->exit_code, 0) << read->out;
  }

  static std::string* dir_;
  static TestKbsProcess* kbs_;
  static std::unique_ptr<GuestVm> vm_;
  static AgentClient* agent_;
};

std::string* CrashVmTest::dir_ = nullptr;
TestKbsProcess* CrashVmTest::kbs_ = nullptr;
std::unique_ptr<GuestVm> CrashVmTest::vm_;
AgentClient* CrashVmTest::agent_ = nullptr;

// One VM: the agent dies at each commit point of a creation on a fresh blank
// disk; its successor (no crash point) undoes the partial activation, the
// retry completes it, and the volume reopens with its data.
TEST_F(CrashVmTest, AgentKilledAtEachCreationPoint) {
  const std::vector<std::pair<std::string, std::string>> points = {{"pv-after-sb-formatting", "create"},
                                                                   {"pv-after-crypt-format", "create"},
                                                                   {"pv-after-guard", "create"},
                                                                   {"after-mkfs", "create"},
                                                                   // READY is on the disk: the retry opens it.
                                                                   {"pv-after-sb-ready", "open"}};
  int n = 0;
  for (const auto& [point, retry_action] : points) {
    SCOPED_TRACE(point);
    const std::string id = Cat("pv-point", n++);
    const auto started = Clock::now();
    SparseImage disk(*dir_, id, 64 * MiB);
    auto pci = vm_->Hotplug(disk.path(), id, id);
    ASSERT_TRUE(pci.ok()) << pci.status();

    ASSERT_TRUE(vm_->SetAgentCommandLine(KbsAgentArgs(*kbs_), {Cat("COCOSTORAGE_CRASH_POINT=", point)}).ok());
    ASSERT_TRUE(vm_->RestartAgent().ok());
    ASSERT_TRUE(vm_->WaitAgentListening().ok());
    // From the next start on: a normal agent.
    ASSERT_TRUE(vm_->SetAgentCommandLine(KbsAgentArgs(*kbs_), {}).ok());
    AgentClient once(vm_->AgentTarget(), RetryPolicy{.attempts = 1});
    grpc::Status st = once.Activate(PersistentFs(id, *pci, kPointUri));
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
    auto log = vm_->AgentLog();
    ASSERT_TRUE(log.ok());
    EXPECT_NE(log->find(Cat("\"point\":\"", point, "\"")), std::string::npos) << "the agent never reached " << point;
    // The guest's supervisor respawned it, now without the crash point (its
    // command line was reset before the kill); its recovery undid the
    // half-done activation.
    ASSERT_TRUE(vm_->WaitAgentListening().ok());
    std::vector<pb::Volume> list;
    ASSERT_TRUE(agent_->List(&list).ok());
    EXPECT_TRUE(list.empty());
    EXPECT_EQ(Guest("dmsetup ls | grep -c coco- || true"), "0\n") << Guest("dmsetup ls");

    const std::string target = Cat(kStorageRoot, "/", id);
    st = agent_->Activate(PersistentFs(id, *pci, kPointUri));
    ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
    EXPECT_EQ(LastAction(id), retry_action);
    EXPECT_EQ(Guest(Cat("echo ", point, " > ", target, "/marker && sync && cat ", target, "/marker")), point + "\n");
    ASSERT_TRUE(agent_->Deactivate(id).ok());
    st = agent_->Activate(PersistentFs(id, *pci, kPointUri));
    ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
    EXPECT_EQ(LastAction(id), "open");
    EXPECT_EQ(Guest(Cat("cat ", target, "/marker")), point + "\n");
    ExpectConsistentUnmounted(id, /*full_read=*/false);
    ASSERT_TRUE(agent_->Deactivate(id).ok());
    EXPECT_TRUE(vm_->Unplug(id).ok());
    std::printf("crash point %-24s killed, recovered, retried (%s), reopened in %.1f s\n", point.c_str(),
                retry_action.c_str(), std::chrono::duration<double>(Clock::now() - started).count());
  }
}

TEST_F(CrashVmTest, PowerCutDuringFsyncedWrites) {
  const int iterations = EnvInt("COCOSTORAGE_CRASH_ITERATIONS", 1);
  const uint64_t seed = std::getenv("COCOSTORAGE_CRASH_SEED") != nullptr
                            ? std::strtoull(std::getenv("COCOSTORAGE_CRASH_SEED"), nullptr, 10)
                            : std::random_device{}();
  std::printf("CrashVmTest: %d iterations, seed %llu (COCOSTORAGE_CRASH_SEED=%llu replays the kill delays)\n",
              iterations, static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> delay_ms(500, 8000);

  const std::string id = "pv-crash";
  const std::string target = Cat(kStorageRoot, "/", id);
  // Room for kKeepIterations + 1 iterations of both writers at full speed
  // (~170 MiB each at 8 s under TCG): a writer must never hit ENOSPC.
  SparseImage disk(*dir_, id, 1024 * MiB);
  struct Run {
    int iteration;
    int records_per_file;
    long long acked;  // -1: nothing acknowledged
  };
  std::map<int, Run> runs;  // by run id: the runs still on the volume
  long long total_acked = 0;
  uint64_t total_bytes = 0;
  const auto started = Clock::now();

  // Iteration i (0-based) writes runs i and 1000 + i and is cut; the
  // activation after it, in a new VM, checks every run on the volume. The
  // last check is the extra step i == iterations.
  for (int i = 0; i <= iterations; ++i) {
    SCOPED_TRACE(Cat("iteration ", i));
    if (i > 0) Reboot();
    KernelLogCursor kernel(vm_.get());
    auto pci = vm_->Hotplug(disk.path(), id, id);
    ASSERT_TRUE(pci.ok()) << pci.status();
    grpc::Status st = agent_->Activate(PersistentFs(id, *pci, kCrashUri));
    ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
    ASSERT_EQ(LastAction(id), i == 0 ? "create" : "open");

    if (i > 0) {
      for (auto it = runs.begin(); it != runs.end();) {
        const int run = it->first;
        const Run& r = it->second;
        std::string out = Guest(
            Cat("coco-crash-writer verify ", target, "/run-", run, " ", run, " ", r.records_per_file, " ", r.acked));
        auto f = Fields(out);
        EXPECT_EQ(f["ok"], "1") << out;
        total_bytes += std::strtoull(f["bytes"].c_str(), nullptr, 10);
        if (r.iteration == i - 1) {
          std::printf(
              "crash iteration %d/%d: run %d after reopen: acked seq %lld, records found %s (valid %s, partial %s, "
              "zero %s, bad %s), bytes verified %s\n",
              i, iterations, run, r.acked, f["records"].c_str(), f["valid"].c_str(), f["partial"].c_str(),
              f["zero"].c_str(), f["bad"].c_str(), f["bytes"].c_str());
        }
        if (r.iteration <= i - 1 - kKeepIterations) {
          EXPECT_EQ(Guest(Cat("rm -rf ", target, "/run-", run, " && sync; echo $?")), "0\n");
          it = runs.erase(it);
        } else {
          ++it;
        }
      }
      ExpectConsistentUnmounted(id, /*full_read=*/true);
      auto errors = kernel.NewErrors();
      ASSERT_TRUE(errors.ok()) << errors.status();
      EXPECT_TRUE(errors->empty()) << Join(*errors, "\n");
      ASSERT_TRUE(agent_->Deactivate(id).ok());
      std::fflush(stdout);
      if (HasFailure() || i == iterations) break;
      // A clean reopen in the same VM, for the next iteration's writes.
      st = agent_->Activate(PersistentFs(id, *pci, kCrashUri));
      ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
      ASSERT_EQ(LastAction(id), "open");
    }

    // The writers in the background, their output in the guest's tmpfs.
    std::string launch;
    for (const WriterShape& w : kWriters) {
      const int run = w.run_base + i;
      runs[run] = Run{i, w.records_per_file, -1};
      launch += Cat("coco-crash-writer write ", target, "/run-", run, " ", run, " ", w.sync_every, " ",
                    w.records_per_file, " </dev/null >>/tmp/crashw.log 2>&1 & ");
    }
    const int delay = delay_ms(rng);
    ASSERT_EQ(Guest(Cat(launch, "sleep 0.2; pidof coco-crash-writer | wc -w")), Cat(std::size(kWriters), "\n"))
        << Guest("cat /tmp/crashw.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    vm_->Kill();
    std::ifstream in(vm_->ConsoleLogPath(), std::ios::binary);
    std::stringstream console;
    console << in.rdbuf();
    std::string figures;
    for (const WriterShape& w : kWriters) {
      Run& r = runs[w.run_base + i];
      r.acked = AckedIn(console.str(), w.run_base + i);
      // Cut means cut while writing: a writer that had stopped on its own
      // (full volume, I/O error) would make the acks meaningless.
      const std::string stopped = Cat("crashw run=", w.run_base + i, " stopped");
      const size_t at = console.str().find(stopped);
      if (at != std::string::npos) ADD_FAILURE() << console.str().substr(at, 200);
      total_acked += r.acked + 1;
      figures += Cat(figures.empty() ? "" : ", ", "run ", w.run_base + i, " acked seq ", r.acked, " (",
                     (r.acked + 1) * static_cast<long long>(kRecordBytes / 1024), " KiB)");
    }
    std::printf("crash iteration %d/%d: seed %llu, QEMU killed %d ms after the writers started; %s\n", i + 1,
                iterations, static_cast<unsigned long long>(seed), delay, figures.c_str());
    std::fflush(stdout);
  }
  std::printf(
      "CrashVmTest summary: seed %llu, %d power cuts, %lld acknowledged records (%llu MiB), %llu bytes verified "
      "after reopens, %s, %.1f s\n",
      static_cast<unsigned long long>(seed), iterations, total_acked,
      static_cast<unsigned long long>(total_acked) * kRecordBytes / MiB, static_cast<unsigned long long>(total_bytes),
      HasFailure() ? "FAILED" : "all intact", std::chrono::duration<double>(Clock::now() - started).count());
  if (vm_ && vm_->Alive()) {
    EXPECT_TRUE(vm_->Unplug(id).ok());
  }
}

}  // namespace
}  // namespace cocostorage::vmtest
