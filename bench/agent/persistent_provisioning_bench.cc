// Persistent volumes (docs/design.md §4.5, §4.7): what creating and opening
// one costs against the ephemeral path, for sparse devices of 1, 8 and 64 GiB,
// in one VM harness guest (TCG: compare ratios from this one run) whose agent
// gets its keys from the test KBS on the host. Per size:
//   create      first activation of a persistent volume (KBS key, ext4): the
//               structural blank proof, superblock slots, LUKS2 + dm-integrity
//               in journal mode, guard metadata zeroed inside the encrypted
//               device, mkfs, mount;
//   open        the next activation of the same disk after a deactivate
//               (authenticate the header, journal replay, reload the pool);
//   create blk  the same creation in block mode (no mkfs): what is left is
//               the stack itself;
//   ephemeral   an ephemeral ext4 volume (guard metadata in guest memory,
//               dm-integrity without a journal);
//   full wipe   the ephemeral volume with init_mode full-wipe (what
//               `cryptsetup luksFormat --integrity` does by default), only at
//               --wipe-sizes (linear, ~1 min/GiB under TCG), the other sizes
//               extrapolated linearly and marked so.
// Columns: the RPC as the host sees it (includes the KBS round trip for the
// persistent rows), the agent's own provisioning time (from the device being
// there to mounted) and bytes it wrote to the virtio disk, and how much the
// host's sparse backing file grew (st_blocks * 512). Never asserts on time.
//
//   agent_persistent_provisioning_bench [--sizes=1,8,64] [--wipe-sizes=1]
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "agent_vm_support.h"
#include "cocostorage/common/strings.h"
#include "kbs_guest.h"
#include "test_kbs_process.h"

using namespace cocostorage;
using namespace cocostorage::vmtest;

namespace {

constexpr uint64_t GiB = 1ull << 30;
constexpr double MiBf = 1 << 20;
constexpr char kRootHex[] = "6a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19";
constexpr char kUri[] = "kbs:///default/keys/pv-bench";

struct Row {
  std::string approach;
  int size_gib = 0;
  double rpc_s = 0;    // ActivateVolume as the host sees it
  double agent_s = 0;  // provisioning_duration_ms
  double mib_written = 0;
  double host_alloc_mib = 0;  // growth of the backing file's allocation
  std::string action;
  size_t errors = 0;
  bool extrapolated = false;
  std::string note;
};

std::vector<int> ParseSizes(const std::string& arg) {
  std::vector<int> out;
  for (const auto& p : Split(arg, ',')) out.push_back(std::stoi(p));
  return out;
}

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

uint64_t AllocatedBytes(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

class Bench {
 public:
  // One attempt per call: a retry would hide a failure inside a timing.
  Bench(GuestVm* vm, std::string dir)
      : vm_(vm), agent_(vm->AgentTarget(), RetryPolicy{.attempts = 1}), cursor_(vm), dir_(std::move(dir)) {}

  // A fresh sparse disk of `gib`, hot-plugged; its PCI path.
  std::string Plug(const std::string& name, int gib) {
    images_[name] = std::make_unique<SparseImage>(dir_, name, static_cast<uint64_t>(gib) * GiB);
    auto pci = vm_->Hotplug(images_[name]->path(), name, name);
    (void)vm_->WaitForDisk(name);
    if (!pci.ok()) std::cerr << "hotplug " << name << ": " << pci.status() << "\n";
    return pci.ok() ? *pci : "";
  }
  void Unplug(const std::string& name) {
    (void)vm_->Unplug(name);
    images_.erase(name);
  }

  // One activation of `req` whose disk is backed by image `name`; the volume
  // is left active.
  Row Activate(const std::string& approach, int gib, const std::string& name, const pb::ActivateVolumeRequest& req) {
    Row row{approach, gib};
    (void)cursor_.NewErrors();
    const uint64_t alloc0 = AllocatedBytes(images_[name]->path());
    pb::Volume vol;
    double t0 = Now();
    grpc::Status s = agent_.Activate(req, &vol);
    row.rpc_s = Now() - t0;
    if (!s.ok()) row.note = Cat("FAILED: ", s.error_message());
    row.agent_s = static_cast<double>(vol.provisioning_duration_ms()) / 1000.0;
    row.mib_written = static_cast<double>(vol.provisioning_bytes_written()) / MiBf;
    row.host_alloc_mib = static_cast<double>(AllocatedBytes(images_[name]->path()) - alloc0) / MiBf;
    row.action = LastActivationAction(vm_, req.volume_id());
    auto e = cursor_.NewErrors();
    row.errors = e.ok() ? e->size() : 0;
    std::cerr << "done: " << approach << " " << gib << " GiB: " << row.rpc_s << " s (" << row.action << ")"
              << (row.note.empty() ? "" : " ") << row.note << "\n";
    return row;
  }
  void Deactivate(const std::string& id) {
    grpc::Status s = agent_.Deactivate(id);
    if (!s.ok()) std::cerr << "deactivate " << id << ": " << s.error_message() << "\n";
  }

 private:
  GuestVm* vm_;
  AgentClient agent_;
  KernelLogCursor cursor_;
  std::string dir_;
  std::map<std::string, std::unique_ptr<SparseImage>> images_;
};

pb::ActivateVolumeRequest Persistent(pb::ActivateVolumeRequest r) {
  r.mutable_key()->set_kbs_resource_uri(kUri);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes{1, 8, 64};
  std::vector<int> wipe_sizes{1};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--sizes=", 0) == 0)
      sizes = ParseSizes(a.substr(8));
    else if (a.rfind("--wipe-sizes=", 0) == 0)
      wipe_sizes = ParseSizes(a.substr(13));
  }
  std::string dir = MakeTempDir("coco-pvbench");
  cocostorage::testing::TestKbsProcess kbs(dir, {"10.0.2.2", "127.0.0.1"});
  nlohmann::json config = {{"resources", {{"default/keys/pv-bench", {{"hex", kRootHex}}}}},
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
  Bench b(vm->get(), dir);
  std::vector<Row> rows;
  for (int gib : sizes) {
    const std::string pv = Cat("pv", gib);
    std::string pci = b.Plug(pv, gib);
    rows.push_back(b.Activate("persistent create, ext4", gib, pv, Persistent(FsRequest(pv, pci, "ext4"))));
    b.Deactivate(pv);
    rows.push_back(b.Activate("persistent open, ext4", gib, pv, Persistent(FsRequest(pv, pci, "ext4"))));
    b.Deactivate(pv);
    b.Unplug(pv);

    const std::string blk = Cat("pb", gib);
    pci = b.Plug(blk, gib);
    rows.push_back(b.Activate("persistent create, block", gib, blk, Persistent(BlockRequest(blk, pci))));
    b.Deactivate(blk);
    b.Unplug(blk);

    const std::string eph = Cat("ep", gib);
    pci = b.Plug(eph, gib);
    rows.push_back(b.Activate("ephemeral, ext4", gib, eph, FsRequest(eph, pci, "ext4")));
    b.Deactivate(eph);
    b.Unplug(eph);
  }
  double wipe_s_per_gib = 0, wipe_mib_per_gib = 0;
  for (int gib : wipe_sizes) {
    const std::string w = Cat("fw", gib);
    std::string pci = b.Plug(w, gib);
    auto req = FsRequest(w, pci, "ext4");
    req.set_init_mode(pb::INIT_MODE_FULL_WIPE);
    rows.push_back(b.Activate("ephemeral full wipe, ext4", gib, w, req));
    b.Deactivate(w);
    b.Unplug(w);
    wipe_s_per_gib = rows.back().rpc_s / gib;
    wipe_mib_per_gib = rows.back().mib_written / gib;
  }
  for (int gib : sizes) {
    bool measured = false;
    for (int w : wipe_sizes) measured = measured || w == gib;
    if (!measured && wipe_s_per_gib > 0) {
      Row r{"ephemeral full wipe, ext4", gib, wipe_s_per_gib * gib, 0, wipe_mib_per_gib * gib, 0, "", 0, true, ""};
      rows.push_back(r);
    }
  }

  std::printf("\n%-28s %5s %8s %8s %10s %10s %7s %6s\n", "approach", "GiB", "rpc s", "agent s", "MiB written",
              "host MiB", "action", "errors");
  for (const auto& r : rows) {
    std::printf("%-28s %5d %8.2f %8.2f %10.1f %10.1f %7s %6zu%s%s\n", r.approach.c_str(), r.size_gib, r.rpc_s,
                r.agent_s, r.mib_written, r.host_alloc_mib, r.action.c_str(), r.errors,
                r.extrapolated ? "  (extrapolated linearly from the measured size)" : "",
                r.note.empty() ? "" : ("  " + r.note).c_str());
  }
  auto find = [&](const std::string& a, int g) -> const Row* {
    for (const auto& r : rows)
      if (r.approach == a && r.size_gib == g && r.note.empty()) return &r;
    return nullptr;
  };
  std::printf("\nratios (this run; rpc time):\n");
  for (int gib : sizes) {
    const Row* c = find("persistent create, ext4", gib);
    const Row* o = find("persistent open, ext4", gib);
    const Row* e = find("ephemeral, ext4", gib);
    const Row* w = find("ephemeral full wipe, ext4", gib);
    if (c && e) std::printf("  %d GiB: create / ephemeral = %.2fx\n", gib, c->rpc_s / e->rpc_s);
    if (o && e) std::printf("  %d GiB: open / ephemeral = %.2fx\n", gib, o->rpc_s / e->rpc_s);
    if (c && w)
      std::printf("  %d GiB: full wipe / create = %.1fx%s\n", gib, w->rpc_s / c->rpc_s,
                  w->extrapolated ? " (wipe extrapolated)" : "");
  }
  for (const char* a :
       {"persistent create, ext4", "persistent open, ext4", "persistent create, block", "ephemeral, ext4"}) {
    const Row* small = find(a, sizes.front());
    const Row* big = find(a, sizes.back());
    if (small && big && sizes.front() != sizes.back())
      std::printf("  %s: %d GiB / %d GiB = %.2fx (rpc), %.2fx (agent)\n", a, sizes.back(), sizes.front(),
                  big->rpc_s / small->rpc_s, big->agent_s / small->agent_s);
  }
  return 0;
}
