// Steady-state throughput of a persistent volume against the ephemeral stack
// and the raw disk, in one VM harness guest (TCG: compare ratios from this one
// run, not absolutes) whose agent gets its keys from the test KBS. Block-mode
// volumes on 1 GiB sparse disks:
//   raw         the virtio disk itself
//   ephemeral   LUKS2 aes-xts + hmac(sha256), dm-integrity without a journal,
//               zero guard with its metadata in guest memory
//   persistent  the same suite, dm-integrity in journal mode (design §4.7),
//               zero guard with its metadata inside the encrypted device
// Workloads (O_DIRECT, page cache dropped before each, timed in the guest):
//   seq write   256 MiB in 1 MiB writes (first write: the guard provisions)
//   seq rewrite the same 256 MiB again (blocks provisioned)
//   seq read    the same 256 MiB in 1 MiB reads
//   rand write  32 MiB of 4 KiB writes in random order over the first 32 MiB
//               (provisioned), xfs_io pwrite -R
//   dsync write 8 MiB of sequential 4 KiB writes, each O_DSYNC (a flush per
//               write: integrity journal commit and thin metadata commit)
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
  double seq_write = 0, rewrite = 0, seq_read = 0, rand_write = 0, dsync_write = 0;  // MiB/s
};

class Runner {
 public:
  explicit Runner(GuestVm* vm) : vm_(vm) {}
  // MiB/s of one command moving `bytes`, timed in the guest from /proc/uptime.
  double Timed(const std::string& cmd, uint64_t bytes) {
    auto r = vm_->Exec(Cat("sync; echo 3 > /proc/sys/vm/drop_caches; T0=$(cut -d' ' -f1 /proc/uptime); ", cmd,
                           " >/dev/null 2>&1 && echo ELAPSED=$(awk -v a=$T0 -v b=$(cut -d' ' -f1 /proc/uptime) "
                           "'BEGIN{print b-a}')"),
                       std::chrono::minutes(30), {.merge_output = true});
    if (!r.ok()) return 0;
    auto pos = r->out.rfind("ELAPSED=");
    if (pos == std::string::npos) {
      std::cerr << "failed: " << cmd << ": " << r->out << "\n";
      return 0;
    }
    double s = std::stod(r->out.substr(pos + 8));
    return s > 0 ? static_cast<double>(bytes) / MiB / s : 0;
  }
  bool HaveXfsIo() {
    auto r = vm_->Exec("command -v xfs_io");
    return r.ok() && r->out.find("xfs_io") != std::string::npos;
  }
  Result Measure(const std::string& config, const std::string& dev) {
    Result res{config};
    const std::string seq = Cat("dd if=/dev/zero of=", dev, " bs=1M count=256 oflag=direct conv=notrunc");
    res.seq_write = Timed(seq, 256 * MiB);
    res.rewrite = Timed(seq, 256 * MiB);
    res.seq_read = Timed(Cat("dd if=", dev, " of=/dev/null bs=1M count=256 iflag=direct"), 256 * MiB);
    res.rand_write = Timed(Cat("xfs_io -d -c 'pwrite -q -R -Z 42 -b 4096 0 32m' ", dev), 32 * MiB);
    res.dsync_write =
        Timed(Cat("dd if=/dev/zero of=", dev, " bs=4k count=2048 seek=16384 oflag=direct,dsync conv=notrunc"), 8 * MiB);
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
    return std::make_pair(pci.ok() ? *pci : "", dev.ok() ? *dev : "");
  };
  std::vector<Result> results;
  {
    auto [pci, dev] = plug("raw");
    results.push_back(run.Measure("raw virtio disk", dev));
  }
  for (bool persistent : {false, true}) {
    const std::string id = persistent ? "tp-pv" : "tp-eph";
    auto [pci, dev] = plug(id);
    auto req = BlockRequest(id, pci);
    if (persistent) req.mutable_key()->set_kbs_resource_uri(kUri);
    pb::Volume vol;
    grpc::Status s = agent.Activate(req, &vol);
    if (!s.ok()) {
      std::cerr << id << ": " << s.error_message() << "\n";
      return 1;
    }
    const std::string action = LastActivatedAction(vm->get(), id);
    results.push_back(run.Measure(persistent ? Cat("persistent (journal, ", action, ")") : "ephemeral (no journal)",
                                  vol.target_path()));
    (void)agent.Deactivate(id);
  }
  std::printf("\n%-32s %10s %10s %10s %10s %10s\n", "MiB/s", "seq write", "rewrite", "seq read", "4k rand", "4k dsync");
  for (const auto& r : results) {
    std::printf("%-32s %10.1f %10.1f %10.1f %10.2f %10.3f\n", r.config.c_str(), r.seq_write, r.rewrite, r.seq_read,
                r.rand_write, r.dsync_write);
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
