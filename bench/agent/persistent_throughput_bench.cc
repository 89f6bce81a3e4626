// Steady-state throughput of a persistent volume against the ephemeral stack
// and the raw disk, in one VM harness guest (TCG: compare ratios from this one
// run, not absolutes) whose agent gets its keys from the test KBS. Block-mode
// volumes on 1 GiB sparse disks:
//   raw         the virtio disk itself
//   ephemeral   LUKS2 aes-xts + hmac(sha256), dm-integrity without a journal,
//               zero guard with its metadata in guest memory
//   persistent  the same suite, dm-integrity in journal mode (design §4.7),
//               zero guard with its metadata inside the encrypted device
// Workloads (O_DIRECT, page cache dropped before each, timed in the guest;
// every write workload ends with an fsync of the device inside the timing):
//   seq write   256 MiB in 1 MiB writes (first write: the guard provisions)
//   seq rewrite the same 256 MiB again (blocks provisioned)
//   seq read    the same 256 MiB in 1 MiB reads
//   rand write  32 MiB of 4 KiB writes in random order over the first 32 MiB
//               (provisioned), xfs_io pwrite -R
//   dsync write 8 MiB of sequential 4 KiB writes, each RWF_DSYNC (a flush per
//               write: integrity journal commit and thin metadata commit),
//               xfs_io pwrite -D (busybox dd has no oflag=dsync)
// Also printed: MiB that reached the virtio disk per MiB of payload (the
// journal writes data twice).
//   agent_persistent_throughput_bench
#include <cstdio>
#include <iostream>

#include "agent_vm_support.h"
#include "cocostorage/common/strings.h"
#include "kbs_guest.h"
#include "test_kbs_process.h"

using namespace cocostorage;
using namespace cocostorage::vmtest;

namespace {

constexpr uint64_t MiB = 1ull << 20;
constexpr char kRootHex[] = "bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd196a09e667";
constexpr char kUri[] = "kbs:///default/keys/pv-tput";

struct Result {
  std::string config;
  // MiB/s, and MiB that reached the virtio disk per MiB written by the
  // workload (data, tags, integrity journal, thin metadata).
  double seq_write = 0, rewrite = 0, seq_read = 0, rand_write = 0, dsync_write = 0;
  double seq_amp = 0, rand_amp = 0, dsync_amp = 0;
};

struct Timing {
  double mib_s = 0;
  double disk_mib = 0;  // written to the virtio disk, until it went quiet
};

class Runner {
 public:
  explicit Runner(GuestVm* vm) : vm_(vm) {}
  // One command moving `bytes` through `dev`, timed in the guest from
  // /proc/uptime; `disk` (vda, ...) is the virtio disk underneath, whose write
  // counter is read before and once it has stopped moving after the command
  // (dm-integrity copies journalled data to its place after the commit).
  Timing Timed(const std::string& cmd, uint64_t bytes, const std::string& disk) {
    const std::string stat = Cat("/sys/block/", disk, "/stat");
    auto r = vm_->Exec(
        Cat("W() { awk '{print $7}' ", stat, "; }; sync; echo 3 > /proc/sys/vm/drop_caches; W0=$(W); ",
            "T0=$(cut -d' ' -f1 /proc/uptime); ", cmd,
            " >/dev/null 2>&1 && echo ELAPSED=$(awk -v a=$T0 -v b=$(cut -d' ' -f1 /proc/uptime) "
            "'BEGIN{print b-a}') && p=-1 && for i in $(seq 40); do c=$(W); [ \"$c\" = \"$p\" ] && break; p=$c; "
            "sleep 0.5; done && echo WRITTEN=$((c-W0))"),
        std::chrono::minutes(30), {.merge_output = true});
    Timing t;
    if (!r.ok()) return t;
    auto pos = r->out.rfind("ELAPSED=");
    auto wpos = r->out.rfind("WRITTEN=");
    if (pos == std::string::npos || wpos == std::string::npos) {
      std::cerr << "failed: " << cmd << ": " << r->out << "\n";
      return t;
    }
    double s = std::stod(r->out.substr(pos + 8));
    t.mib_s = s > 0 ? static_cast<double>(bytes) / MiB / s : 0;
    t.disk_mib = std::stod(r->out.substr(wpos + 8)) * 512 / MiB;
    return t;
  }
  bool HaveXfsIo() {
    auto r = vm_->Exec("command -v xfs_io");
    return r.ok() && r->out.find("xfs_io") != std::string::npos;
  }
  // Every write workload ends with an fsync of the device (a FLUSH down the
  // stack), inside the timing: what was written is then on the disk.
  Result Measure(const std::string& config, const std::string& dev, const std::string& disk) {
    Result res{config};
    const std::string fsync = Cat(" && xfs_io -c fsync ", dev);
    const std::string seq = Cat("dd if=/dev/zero of=", dev, " bs=1M count=256 oflag=direct conv=notrunc", fsync);
    Timing t = Timed(seq, 256 * MiB, disk);
    res.seq_write = t.mib_s;
    t = Timed(seq, 256 * MiB, disk);
    res.rewrite = t.mib_s;
    res.seq_amp = t.disk_mib / 256;
    res.seq_read = Timed(Cat("dd if=", dev, " of=/dev/null bs=1M count=256 iflag=direct"), 256 * MiB, disk).mib_s;
    t = Timed(Cat("xfs_io -d -c 'pwrite -q -R -Z 42 -b 4096 0 32m' ", dev, fsync), 32 * MiB, disk);
    res.rand_write = t.mib_s;
    res.rand_amp = t.disk_mib / 32;
    t = Timed(Cat("xfs_io -d -c 'pwrite -q -D -b 4096 64m 8m' ", dev), 8 * MiB, disk);
    res.dsync_write = t.mib_s;
    res.dsync_amp = t.disk_mib / 8;
    std::cerr << "done: " << config << "\n";
    return res;
  }

 private:
  GuestVm* vm_;
};

}  // namespace

int main() {
  std::string dir = MakeTempDir("coco-pvtput");
  cocostorage::testing::TestKbsProcess kbs(dir, {"10.0.2.2", "127.0.0.1"});
  nlohmann::json config = {{"resources", {{"default/keys/pv-tput", {{"hex", kRootHex}}}}},
                           {"allowed_tees", {"sample"}},
                           {"policy", {{"default", "allow"}}}};
  if (!kbs.Start(config, 0)) {
    std::cerr << "test KBS did not start (see " << dir << "/server.stderr)\n";
    return 1;
  }
  auto vm = BootKbsGuest(kbs);
  if (!vm.ok()) {
    std::cerr << "VM did not start: " << vm.status() << "\n";
    return 1;
  }
  AgentClient agent((*vm)->AgentTarget(), RetryPolicy{.attempts = 1});
  Runner run(vm->get());
  if (!run.HaveXfsIo()) {
    std::cerr << "the guest image has no xfs_io (testing/vm/guest/build-guest-image.sh TOOLS): rebuild "
                 "vm_guest_image\n";
    return 1;
  }
  std::vector<std::unique_ptr<SparseImage>> images;
  auto plug = [&](const std::string& name) {
    images.push_back(std::make_unique<SparseImage>(dir, name, 1024 * MiB));
    auto pci = (*vm)->Hotplug(images.back()->path(), name, name);
    auto dev = (*vm)->WaitForDisk(name);
    std::string disk = dev.ok() ? *dev : "";
    if (auto slash = disk.rfind('/'); slash != std::string::npos) disk = disk.substr(slash + 1);
    return std::make_pair(pci.ok() ? *pci : "", disk);
  };
  std::vector<Result> results;
  {
    auto [pci, disk] = plug("raw");
    results.push_back(run.Measure("raw virtio disk", Cat("/dev/", disk), disk));
  }
  for (bool persistent : {false, true}) {
    const std::string id = persistent ? "tp-pv" : "tp-eph";
    auto [pci, disk] = plug(id);
    auto req = BlockRequest(id, pci);
    if (persistent) req.mutable_key()->set_kbs_resource_uri(kUri);
    pb::Volume vol;
    grpc::Status s = agent.Activate(req, &vol);
    if (!s.ok()) {
      std::cerr << id << ": " << s.error_message() << "\n";
      return 1;
    }
    const std::string action = LastActivationAction(vm->get(), id);
    results.push_back(run.Measure(persistent ? Cat("persistent (journal, ", action, ")") : "ephemeral (no journal)",
                                  vol.target_path(), disk));
    // What the kernel runs: mode J (journal) or D (direct) in the table.
    auto table = (*vm)->Exec(Cat("dmsetup table | grep ' integrity ' | grep coco-", id));
    std::cerr << id << " dm-integrity: " << (table.ok() ? table->out : "?");
    (void)agent.Deactivate(id);
  }
  std::printf("\n%-32s %10s %10s %10s %10s %10s\n", "MiB/s", "seq write", "rewrite", "seq read", "4k rand", "4k dsync");
  for (const auto& r : results) {
    std::printf("%-32s %10.1f %10.1f %10.1f %10.2f %10.3f\n", r.config.c_str(), r.seq_write, r.rewrite, r.seq_read,
                r.rand_write, r.dsync_write);
  }
  std::printf("\n%-32s %10s %10s %10s\n", "disk MiB per MiB written", "rewrite", "4k rand", "4k dsync");
  for (const auto& r : results) {
    std::printf("%-32s %10.2f %10.2f %10.2f\n", r.config.c_str(), r.seq_amp, r.rand_amp, r.dsync_amp);
  }
  const Result& raw = results[0];
  const Result& eph = results[1];
  const Result& pv = results[2];
  auto ratios = [](const char* what, const Result& a, const Result& b) {
    std::printf("  %-24s seq write %.2f, rewrite %.2f, seq read %.2f, 4k rand write %.2f, 4k dsync write %.2f\n", what,
                a.seq_write / b.seq_write, a.rewrite / b.rewrite, a.seq_read / b.seq_read, a.rand_write / b.rand_write,
                a.dsync_write / b.dsync_write);
  };
  std::printf("\nratios (this run):\n");
  ratios("persistent / ephemeral:", pv, eph);
  ratios("persistent / raw:", pv, raw);
  ratios("ephemeral / raw:", eph, raw);
  return 0;
}
