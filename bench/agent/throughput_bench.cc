// Steady-state throughput of the guest volume stack, inside the VM harness
// guest (TCG: compare ratios from this one run, not absolutes). Block-mode
// volumes, O_DIRECT dd, for:
//   raw          the virtio disk itself
//   crypt+hmac   LUKS2 aes-xts + hmac(sha256) integrity, full wipe, no guard
//   +guard       the same with the zero guard (dm-thin) on top: first write
//                (provisions blocks) and rewrite
//   crypt only   integrity none (no guard needed)
// Workloads: sequential 1 MiB writes/reads of 192 MiB, and 4 KiB direct
// writes/reads of 32 MiB (per-I/O overhead, e.g. the guard's btree lookup).
//   agent_throughput_bench
#include <cstdio>
#include <iostream>

#include "agent_vm_support.h"
#include "cocostorage/common/strings.h"

using namespace cocostorage;
using namespace cocostorage::vmtest;

namespace {

constexpr uint64_t MiB = 1ull << 20;

struct Result {
  std::string config;
  double seq_write = 0, seq_read = 0, small_write = 0, small_read = 0;  // MiB/s
  double rewrite = 0;
};

class Runner {
 public:
  explicit Runner(GuestVm* vm) : vm_(vm) {}
  // MiB/s of one dd, timed in the guest from /proc/uptime.
  double Dd(const std::string& args, uint64_t bytes) {
    auto r = vm_->Exec(Cat("sync; echo 3 > /proc/sys/vm/drop_caches; T0=$(cut -d' ' -f1 /proc/uptime); dd ", args,
                           " 2>/dev/null && echo ELAPSED=$(awk -v a=$T0 -v b=$(cut -d' ' -f1 /proc/uptime) "
                           "'BEGIN{print b-a}')"),
                       std::chrono::minutes(30), {.merge_output = true});
    if (!r.ok()) return 0;
    auto pos = r->out.rfind("ELAPSED=");
    if (pos == std::string::npos) {
      std::cerr << "dd failed: " << args << ": " << r->out << "\n";
      return 0;
    }
    double s = std::stod(r->out.substr(pos + 8));
    return s > 0 ? static_cast<double>(bytes) / MiB / s : 0;
  }
  Result Measure(const std::string& config, const std::string& dev, bool first_write_separate) {
    Result res{config};
    constexpr uint64_t kSeq = 192 * MiB, kSmall = 32 * MiB;
    res.seq_write = Dd(Cat("if=/dev/zero of=", dev, " bs=1M count=192 oflag=direct conv=notrunc"), kSeq);
    if (first_write_separate) {
      res.rewrite = Dd(Cat("if=/dev/zero of=", dev, " bs=1M count=192 oflag=direct conv=notrunc"), kSeq);
    }
    res.seq_read = Dd(Cat("if=", dev, " of=/dev/null bs=1M count=192 iflag=direct"), kSeq);
    res.small_write =
        Dd(Cat("if=/dev/zero of=", dev, " bs=4k count=8192 seek=65536 oflag=direct conv=notrunc"), kSmall);
    res.small_read = Dd(Cat("if=", dev, " of=/dev/null bs=4k count=8192 skip=65536 iflag=direct"), kSmall);
    return res;
  }

 private:
  GuestVm* vm_;
};

}  // namespace

int main() {
  std::string dir = MakeTempDir("coco-tput");
  GuestVmOptions opts;
  opts.memory_mib = 2048;
  auto vm = GuestVm::Start(opts);
  if (!vm.ok() || !(*vm)->WaitAgentListening().ok()) {
    std::cerr << "VM did not start: " << vm.status() << "\n";
    return 1;
  }
  AgentClient agent((*vm)->AgentTarget());
  Runner run(vm->get());
  std::vector<std::unique_ptr<SparseImage>> images;
  auto plug = [&](const std::string& name) {
    images.push_back(std::make_unique<SparseImage>(dir, name, 384 * MiB));
    auto pci = (*vm)->Hotplug(images.back()->path(), name, name);
    auto dev = (*vm)->WaitForDisk(name);
    return std::make_pair(pci.ok() ? *pci : "", dev.ok() ? *dev : "");
  };
  std::vector<Result> results;
  {
    auto [pci, dev] = plug("raw");
    results.push_back(run.Measure("raw virtio disk", dev, false));
  }
  struct Cfg {
    const char* name;
    pb::Integrity integrity;
    pb::InitMode init;
  };
  for (Cfg c : {Cfg{"crypt+hmac, full wipe (no guard)", pb::INTEGRITY_HMAC_SHA256, pb::INIT_MODE_FULL_WIPE},
                Cfg{"crypt+hmac + zero guard", pb::INTEGRITY_HMAC_SHA256, pb::INIT_MODE_ZERO_GUARD},
                Cfg{"crypt only (integrity none)", pb::INTEGRITY_NONE, pb::INIT_MODE_ZERO_GUARD}}) {
    std::string id = Cat("t", results.size());
    auto [pci, dev] = plug(id);
    auto req = BlockRequest(id, pci);
    req.set_integrity(c.integrity);
    req.set_init_mode(c.init);
    pb::Volume vol;
    auto s = agent.Activate(req, &vol);
    if (!s.ok()) {
      std::cerr << c.name << ": " << s.error_message() << "\n";
      return 1;
    }
    bool guard = c.init == pb::INIT_MODE_ZERO_GUARD && c.integrity != pb::INTEGRITY_NONE;
    results.push_back(run.Measure(c.name, vol.target_path(), guard));
    (void)agent.Deactivate(id);
  }
  std::printf("\n%-36s %12s %12s %12s %12s %12s\n", "MiB/s", "seq write", "(rewrite)", "seq read", "4k write",
              "4k read");
  for (const auto& r : results) {
    std::printf("%-36s %12.1f %12s %12.1f %12.2f %12.2f\n", r.config.c_str(), r.seq_write,
                r.rewrite > 0 ? Cat(fmt::format("{:.1f}", r.rewrite)).c_str() : "-", r.seq_read, r.small_write,
                r.small_read);
  }
  const Result& raw = results[0];
  const Result& nog = results[1];
  const Result& g = results[2];
  std::printf("\nratios (this run):\n");
  std::printf("  crypt+hmac / raw: seq write %.2f, seq read %.2f, 4k write %.2f, 4k read %.2f\n",
              nog.seq_write / raw.seq_write, nog.seq_read / raw.seq_read, nog.small_write / raw.small_write,
              nog.small_read / raw.small_read);
  std::printf(
      "  guard / no guard (crypt+hmac): first write %.2f, rewrite %.2f, seq read %.2f, 4k write %.2f, 4k read %.2f\n",
      g.seq_write / nog.seq_write, g.rewrite / nog.seq_write, g.seq_read / nog.seq_read,
      g.small_write / nog.small_write, g.small_read / nog.small_read);
  return 0;
}
