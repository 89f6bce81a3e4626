// Provisioning time vs volume size, inside the VM harness guest (TCG):
//   * our agent (zero guard; ext4 and xfs), Activate RPC until mounted;
//   * the cryptsetup CLI with its default full integrity wipe (+ mkfs, mount);
//   * the upstream Confidential Data Hub sequence (luksFormat
//     --integrity-no-wipe with the default PBKDF, luksOpen, mkfs -n, zeroing
//     superblock backups with O_DIRECT, mkfs lazy_itable_init=0, mount).
// Every approach then gets the same probe (blkid, 64 MiB read at both ends of
// the mapped device, fsck) and the guest kernel log is searched for integrity
// and I/O errors. Prints a table and ratios measured in this one run.
//
//   agent_provisioning_bench [--sizes=1,8,64] [--wipe-sizes=1]
// The full wipe is linear in size (~80 s/GiB under TCG): by default it runs
// at 1 GiB only and the larger sizes are extrapolated, and marked so.
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "agent_vm_support.h"
#include "cocostorage/common/strings.h"

using namespace cocostorage;
using namespace cocostorage::vmtest;

namespace {

constexpr uint64_t GiB = 1ull << 30;

struct Row {
  std::string approach;
  int size_gib = 0;
  double seconds = 0;
  double mib_written = 0;
  size_t errors = 0;
  bool extrapolated = false;
  std::string note;
};

std::vector<int> ParseSizes(const std::string& arg) {
  std::vector<int> out;
  for (const auto& p : Split(arg, ',')) out.push_back(std::stoi(p));
  return out;
}

// The guest script ends with ELAPSED_MS=<n> on success; anything else is a
// failure whose output goes into the row's note.
double ElapsedSeconds(const std::string& out, std::string* note) {
  auto pos = out.rfind("ELAPSED_MS=");
  if (pos == std::string::npos) {
    *note = "FAILED: " + out.substr(out.size() > 300 ? out.size() - 300 : 0);
    return 0;
  }
  return std::stod(out.substr(pos + 11)) / 1000.0;
}

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

class Bench {
 public:
  explicit Bench(GuestVm* vm) : vm_(vm), agent_(vm->AgentTarget()), cursor_(vm) {}

  std::string Sh(const std::string& cmd) {
    auto r = vm_->Exec(cmd, std::chrono::hours(2), {.merge_output = true});
    if (!r.ok()) {
      std::cerr << "exec failed: " << r.status() << "\n";
      return "";
    }
    return r->out;
  }
  uint64_t SectorsWritten(const std::string& vd) {
    auto f = Split(Sh(Cat("cat /sys/block/", vd, "/stat")), ' ');
    return f.size() > 6 ? std::stoull(f[6]) : 0;
  }
  std::string Disk(const std::string& serial) {
    return Sh(
        Cat("for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = ", serial, " ] && basename $d; done | tr -d '\\n'"));
  }

  // Same probe for every approach: what udev/blkid, readahead and fsck do.
  void Probe(const std::string& dev, const std::string& fs, const std::string& mnt) {
    Sh(Cat("umount ", mnt, " 2>/dev/null; blkid ", dev,
           " >/dev/null; "
           "dd if=",
           dev,
           " of=/dev/null bs=1M count=64 2>/dev/null; "
           "S=$(blockdev --getsize64 ",
           dev, "); dd if=", dev, " of=/dev/null bs=1M skip=$((S/1048576-64)) 2>/dev/null; ",
           fs == "ext4" ? Cat("e2fsck -fn ", dev) : Cat("xfs_repair -n ", dev), " >/dev/null 2>&1"));
  }
  size_t Errors() {
    auto e = cursor_.NewErrors();
    return e.ok() ? e->size() : 0;
  }

  Row Agent(int gib, const std::string& fs, const std::string& pci) {
    Row row{Cat("agent zero-guard ", fs), gib};
    auto req = FsRequest(Cat("b", gib, fs), pci, fs);
    pb::Volume vol;
    double t0 = Now();
    auto s = agent_.Activate(req, &vol);
    row.seconds = Now() - t0;
    if (!s.ok()) row.note = s.error_message();
    row.mib_written = static_cast<double>(vol.provisioning_bytes_written()) / (1 << 20);
    Sh(Cat("echo bench > ", vol.target_path(), "/f && sync"));
    Probe(vol.mapped_device(), fs, vol.target_path());
    Sh(Cat("mount ", vol.mapped_device(), " ", vol.target_path()));
    row.errors = Errors();
    (void)agent_.Deactivate(req.volume_id());
    return row;
  }

  // A command-line baseline: `script` provisions /dev/mapper/<name> from
  // /dev/<vd>; it is then mounted at /mnt/<name> with `mount_opts`, timed in
  // the guest, probed like the agent's volumes, and closed. `key_file` is
  // removed after.
  Row CliSequence(const std::string& approach, int gib, const std::string& vd, const std::string& name,
                  const std::string& script, const std::string& mount_opts, const std::string& key_file) {
    Row row{approach, gib};
    const std::string mapper = Cat("/dev/mapper/", name);
    const std::string mnt = Cat("/mnt/", name);
    uint64_t w0 = SectorsWritten(vd);
    std::string out = Sh(Cat("T0=$(cut -d' ' -f1 /proc/uptime); ", script, " && mkdir -p ", mnt, " && mount ",
                             mount_opts, mapper, " ", mnt,
                             " && echo ELAPSED_MS=$(awk -v a=$T0 -v b=$(cut -d' ' -f1 /proc/uptime) "
                             "'BEGIN{print int((b-a)*1000)}')"));
    row.seconds = ElapsedSeconds(out, &row.note);
    row.mib_written = static_cast<double>(SectorsWritten(vd) - w0) * 512 / (1 << 20);
    Sh(Cat("echo bench > ", mnt, "/f && sync"));
    Probe(mapper, "ext4", mnt);
    row.errors = Errors();
    Sh(Cat("umount ", mnt, " 2>/dev/null; cryptsetup close ", name, "; rm -f ", key_file));
    return row;
  }

  Row CliFullWipe(int gib, const std::string& vd) {
    return CliSequence(
        "cryptsetup CLI, full wipe, ext4", gib, vd, "wipe",
        Cat("head -c 64 /dev/urandom > /tmp/k; "
            "cryptsetup --batch-mode luksFormat --type luks2 --cipher aes-xts-plain64 --sector-size 4096 "
            "--integrity hmac-sha256 --key-file /tmp/k /dev/",
            vd, " && cryptsetup open --key-file /tmp/k /dev/", vd, " wipe && mkfs.ext4 -q -F /dev/mapper/wipe"),
        "", "/tmp/k");
  }

  // What the upstream Confidential Data Hub runs (see shared reference notes).
  Row Cdh(int gib, const std::string& vd) {
    return CliSequence(
        "CDH sequence (no-wipe, ext4)", gib, vd, "cdh",
        Cat("head -c 4096 /dev/urandom > /tmp/p; "
            "cryptsetup --batch-mode luksFormat --type luks2 --cipher aes-xts-plain64 --sector-size 4096 "
            "--integrity hmac-sha256 --integrity-no-wipe --integrity-no-journal /dev/",
            vd, " - < /tmp/p && cryptsetup luksOpen -d - /dev/", vd,
            " cdh < /tmp/p && "
            "B=$(mkfs.ext4 -F -n /dev/mapper/cdh 2>/dev/null | sed -n '/Superblock backups/,/^$/p' | tail -n +2 | "
            "tr -d ' \\n' | tr ',' ' '); "
            "dd if=/dev/zero of=/dev/mapper/cdh bs=4096 count=1 oflag=direct 2>/dev/null; "
            "for b in $B; do dd if=/dev/zero of=/dev/mapper/cdh bs=4096 count=1 seek=$b oflag=direct 2>/dev/null; "
            "done; "
            "mkfs.ext4 -q -F -O ^has_journal -m 0 -i 163840 -I 128 -E lazy_itable_init=0 /dev/mapper/cdh"),
        "-o noatime ", "/tmp/p");
  }

  GuestVm* vm_;
  AgentClient agent_;
  KernelLogCursor cursor_;
};

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
  std::string dir = MakeTempDir("coco-bench");
  GuestVmOptions opts;
  opts.memory_mib = 2048;
  opts.root_ports = 16;
  auto vm = GuestVm::Start(opts);
  if (!vm.ok() || !(*vm)->WaitAgentListening().ok()) {
    std::cerr << "VM did not start: " << vm.status() << "\n";
    return 1;
  }
  Bench b(vm->get());
  (void)b.Errors();
  std::vector<Row> rows;
  int n = 0;
  auto plug = [&](int gib, std::vector<std::unique_ptr<SparseImage>>& keep) {
    std::string name = Cat("bn", n++);
    keep.push_back(std::make_unique<SparseImage>(dir, name, static_cast<uint64_t>(gib) * GiB));
    auto pci = (*vm)->Hotplug(keep.back()->path(), name, name);
    (void)(*vm)->WaitForDisk(name);
    return std::make_pair(pci.ok() ? *pci : std::string(), b.Disk(name));
  };
  std::vector<std::unique_ptr<SparseImage>> images;
  for (int gib : sizes) {
    for (const char* fs : {"ext4", "xfs"}) {
      auto [pci, vd] = plug(gib, images);
      rows.push_back(b.Agent(gib, fs, pci));
      std::cerr << "done: " << rows.back().approach << " " << gib << " GiB " << rows.back().seconds << " s\n";
    }
    {
      auto [pci, vd] = plug(gib, images);
      rows.push_back(b.Cdh(gib, vd));
      std::cerr << "done: " << rows.back().approach << " " << gib << " GiB " << rows.back().seconds << " s\n";
    }
  }
  double wipe_s_per_gib = 0, wipe_mib_per_gib = 0;
  for (int gib : wipe_sizes) {
    auto [pci, vd] = plug(gib, images);
    rows.push_back(b.CliFullWipe(gib, vd));
    wipe_s_per_gib = rows.back().seconds / gib;
    wipe_mib_per_gib = rows.back().mib_written / gib;
    std::cerr << "done: " << rows.back().approach << " " << gib << " GiB " << rows.back().seconds << " s\n";
  }
  for (int gib : sizes) {
    bool measured = false;
    for (int w : wipe_sizes) measured = measured || w == gib;
    if (!measured && wipe_s_per_gib > 0) {
      Row r{"cryptsetup CLI, full wipe, ext4", gib, wipe_s_per_gib * gib, wipe_mib_per_gib * gib, 0, true, ""};
      rows.push_back(r);
    }
  }
  auto pid = b.Sh("cat /run/agent.pid");
  std::string hwm = b.Sh(Cat("grep VmHWM /proc/", Split(pid, '\n')[0], "/status"));
  struct stat st {};
  const char* bin = getenv("COCOSTORAGE_AGENT_BINARY");
  long long bin_size = bin && stat(bin, &st) == 0 ? static_cast<long long>(st.st_size) : -1;

  std::printf("\n%-34s %6s %10s %12s %12s %7s\n", "approach", "GiB", "seconds", "MiB written", "MiB/GiB", "errors");
  for (const auto& r : rows) {
    std::printf("%-34s %6d %10.2f %12.1f %12.2f %7zu%s%s\n", r.approach.c_str(), r.size_gib, r.seconds, r.mib_written,
                r.mib_written / r.size_gib, r.errors, r.extrapolated ? "  (extrapolated from 1 GiB, linear)" : "",
                r.note.empty() ? "" : ("  " + r.note).c_str());
  }
  auto find = [&](const std::string& a, int g) -> const Row* {
    for (const auto& r : rows)
      if (r.approach == a && r.size_gib == g) return &r;
    return nullptr;
  };
  std::printf("\nratios (this run):\n");
  for (const char* fs : {"ext4", "xfs"}) {
    const Row* small = find(Cat("agent zero-guard ", fs), sizes.front());
    const Row* big = find(Cat("agent zero-guard ", fs), sizes.back());
    if (small && big)
      std::printf("  agent %s: %d GiB / %d GiB time = %.2fx (goal <= 1.5x)\n", fs, sizes.back(), sizes.front(),
                  big->seconds / small->seconds);
  }
  for (int gib : sizes) {
    const Row* a = find("agent zero-guard ext4", gib);
    const Row* c = find("CDH sequence (no-wipe, ext4)", gib);
    const Row* w = find("cryptsetup CLI, full wipe, ext4", gib);
    if (a && c) std::printf("  %d GiB: CDH sequence / agent ext4 = %.1fx\n", gib, c->seconds / a->seconds);
    if (a && w)
      std::printf("  %d GiB: CLI full wipe / agent ext4 = %.1fx%s\n", gib, w->seconds / a->seconds,
                  w->extrapolated ? " (wipe extrapolated)" : "");
  }
  std::printf("\nagent peak RSS: %s", hwm.c_str());
  std::printf("agent binary size: %lld bytes (%s)\n", bin_size, bin ? bin : "?");
  return 0;
}
