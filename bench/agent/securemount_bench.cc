// SecureMount bring-up and teardown vs volume size, on one VM harness guest:
//   * our agent via kata-agent's SecureMount call (coco-kata-securemount, the
//     Go ttrpc client), ext4 with kata-agent's mkfsOpts and xfs; bring-up is
//     the call until it returns (mounted), teardown is `umount` until the
//     agent has closed every coco-* mapping by itself;
//   * our agent's own API in block mode: Activate and Deactivate RPCs;
//   * the CDH command-line sequence (as in provisioning_bench.cc), teardown
//     `umount` + `cryptsetup close`.
// The machine is shared and noisy, so the approaches run interleaved: every
// round visits every size, and within a size the approach order rotates from
// round to round. Each run gets a fresh sparse disk, unplugged and deleted
// right after. Prints per-run rows, medians with min-max, per-round ratios.
//
//   agent_securemount_bench [--sizes=1,8,64,256,1024] [--rounds=3]
//                           [--approaches=sm-ext4,sm-xfs,api-block,cdh-ext4]
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <map>

#include "agent_vm_support.h"
#include "cocostorage/common/base64.h"
#include "cocostorage/common/strings.h"

using namespace cocostorage;
using namespace cocostorage::vmtest;

namespace {

constexpr uint64_t GiB = 1ull << 30;

struct Run {
  std::string approach;
  int size_gib = 0;
  int round = 0;
  double up_s = -1;    // call until mounted (block mode: until Activate returned)
  double down_s = -1;  // unmount until the agent cleaned up (block: Deactivate)
  double mib_written = 0;
  double host_mib = 0;  // allocated on the host by the sparse backing file
  size_t errors = 0;
  std::string note;
};

std::vector<std::string> Words(const std::string& arg) { return Split(arg, ','); }

std::string Fixed(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Times `cmd` inside the guest (so exec round trips do not count): prints
// ELAPSED_MS=<n> only when `cmd` succeeded.
std::string GuestTimed(const std::string& cmd) {
  return Cat("T0=$(cut -d' ' -f1 /proc/uptime); { ", cmd,
             "; } && echo ELAPSED_MS=$(awk -v a=$T0 -v b=$(cut -d' ' -f1 /proc/uptime) "
             "'BEGIN{print int((b-a)*1000)}')");
}

double ElapsedSeconds(const std::string& out, std::string* note) {
  auto pos = out.rfind("ELAPSED_MS=");
  if (pos == std::string::npos) {
    *note += Cat("FAILED: ", out.substr(out.size() > 200 ? out.size() - 200 : 0), "; ");
    return -1;
  }
  return std::stod(out.substr(pos + 11)) / 1000.0;
}

// Waits for the agent's own teardown: no coco-* mapping left. The poll step
// (50 ms) bounds the resolution; the agent reacts to the mount table itself.
constexpr char kWaitNoMappings[] =
    "i=0; while dmsetup ls | grep -q '^coco-'; do i=$((i+1)); [ $i -gt 6000 ] && exit 1; sleep 0.05; done";

class Bench {
 public:
  Bench(GuestVm* vm, std::string dir) : vm_(vm), agent_(vm->AgentTarget()), cursor_(vm), dir_(std::move(dir)) {}

  std::string Sh(const std::string& cmd) {
    auto r = vm_->Exec(cmd, std::chrono::hours(1), {.merge_output = true});
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
  size_t Errors() {
    auto e = cursor_.NewErrors();
    return e.ok() ? e->size() : 0;
  }

  Run One(const std::string& approach, int gib, int round) {
    Run run{approach, gib, round};
    const std::string name = Cat("sm", n_++);
    SparseImage image(dir_, name, static_cast<uint64_t>(gib) * GiB);
    auto pci = vm_->Hotplug(image.path(), name, name);
    auto disk = pci.ok() ? vm_->WaitForDisk(name) : StatusOr<std::string>(pci.status());
    if (!disk.ok()) {
      run.note = Cat("hotplug failed: ", disk.status().ToString());
      return run;
    }
    const std::string vd = disk->substr(disk->rfind('/') + 1);
    std::string devno = Sh(Cat("cat /sys/block/", vd, "/dev"));
    while (!devno.empty() && devno.back() == '\n') devno.pop_back();
    (void)Errors();
    const uint64_t w0 = SectorsWritten(vd);

    if (approach == "sm-ext4" || approach == "sm-xfs") {
      const std::string mnt = Cat(kStorageRoot, "/", Base64UrlEncode(*pci));
      // ext4: kata-agent's mkfsOpts (the client's default); xfs: none.
      const std::string fs = approach == "sm-ext4" ? "" : " -fs xfs -mkfs ''";
      run.up_s = ElapsedSeconds(
          Sh(GuestTimed(Cat("coco-kata-securemount -timeout 30m -device ", devno, " -mount-point ", mnt, fs))),
          &run.note);
      run.mib_written = static_cast<double>(SectorsWritten(vd) - w0) * 512 / (1 << 20);
      if (run.up_s >= 0) Sh(Cat("echo bench > ", mnt, "/f && sync"));
      run.down_s = ElapsedSeconds(Sh(GuestTimed(Cat("umount ", mnt, " && ", kWaitNoMappings))), &run.note);
    } else if (approach == "api-block") {
      auto req = BlockRequest(name, *pci);
      req.set_device_timeout_ms(60000);
      double t0 = Now();
      auto s = agent_.Activate(req);
      run.up_s = Now() - t0;
      if (!s.ok()) {
        run.up_s = -1;
        run.note += Cat("activate: ", s.error_message(), "; ");
      }
      run.mib_written = static_cast<double>(SectorsWritten(vd) - w0) * 512 / (1 << 20);
      t0 = Now();
      s = agent_.Deactivate(name);
      run.down_s = s.ok() ? Now() - t0 : -1;
      if (!s.ok()) run.note += Cat("deactivate: ", s.error_message(), "; ");
    } else {
      run.up_s = ElapsedSeconds(Sh(GuestTimed(CdhScript(vd))), &run.note);
      run.mib_written = static_cast<double>(SectorsWritten(vd) - w0) * 512 / (1 << 20);
      if (run.up_s >= 0) {
        Sh("echo bench > /mnt/cdh/f && sync");
        run.down_s = ElapsedSeconds(Sh(GuestTimed("umount /mnt/cdh && cryptsetup close cdh")), &run.note);
      } else {
        Sh("umount /mnt/cdh; cryptsetup close cdh");
      }
      Sh("rm -f /tmp/p");
    }
    run.errors = Errors();
    // Leftovers would skew the next run: say so rather than hide it.
    std::string left = Sh("dmsetup ls | grep -c '^coco-\\|^cdh' || true");
    if (left != "0\n") run.note += Cat("mappings left: ", left);
    struct stat st {};
    if (stat(image.path().c_str(), &st) == 0) run.host_mib = static_cast<double>(st.st_blocks) * 512 / (1 << 20);
    if (auto s = vm_->Unplug(name); !s.ok()) run.note += Cat("unplug: ", s.ToString(), "; ");
    return run;
  }

  // What the upstream Confidential Data Hub runs (see provisioning_bench.cc):
  // no-wipe LUKS2 with the default PBKDF, mkfs -n to learn the superblock
  // backups, zero them with O_DIRECT, mkfs with kata-agent's options and
  // eagerly written inode tables, mount.
  static std::string CdhScript(const std::string& vd) {
    return Cat(
        "head -c 4096 /dev/urandom > /tmp/p; "
        "cryptsetup --batch-mode luksFormat --type luks2 --cipher aes-xts-plain64 --sector-size 4096 "
        "--integrity hmac-sha256 --integrity-no-wipe --integrity-no-journal /dev/",
        vd, " - < /tmp/p && cryptsetup luksOpen -d - /dev/", vd,
        " cdh < /tmp/p && "
        "B=$(mkfs.ext4 -F -n /dev/mapper/cdh 2>/dev/null | sed -n '/Superblock backups/,/^$/p' | tail -n +2 | "
        "tr -d ' \\n' | tr ',' ' '); "
        "dd if=/dev/zero of=/dev/mapper/cdh bs=4096 count=1 oflag=direct 2>/dev/null; "
        "for b in $B; do dd if=/dev/zero of=/dev/mapper/cdh bs=4096 count=1 seek=$b oflag=direct 2>/dev/null; "
        "done; "
        "mkfs.ext4 -q -F -O ^has_journal -m 0 -i 163840 -I 128 -E lazy_itable_init=0 /dev/mapper/cdh && "
        "mkdir -p /mnt/cdh && mount -o noatime /dev/mapper/cdh /mnt/cdh");
  }

  GuestVm* vm_;
  AgentClient agent_;
  KernelLogCursor cursor_;
  std::string dir_;
  int n_ = 0;
};

double Median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

std::string UtcNow() {
  char buf[32];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

std::string HostLoad() {
  double l[3] = {0, 0, 0};
  if (getloadavg(l, 3) != 3) return "?";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", l[0], l[1], l[2]);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes{1, 8, 64, 256, 1024};
  std::vector<std::string> approaches{"sm-ext4", "sm-xfs", "api-block", "cdh-ext4"};
  int rounds = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--sizes=", 0) == 0) {
      sizes.clear();
      for (const auto& w : Words(a.substr(8))) sizes.push_back(std::stoi(w));
    } else if (a.rfind("--rounds=", 0) == 0) {
      rounds = std::stoi(a.substr(9));
    } else if (a.rfind("--approaches=", 0) == 0) {
      approaches = Words(a.substr(13));
    } else {
      std::cerr << "unknown argument " << a << "\n";
      return 2;
    }
  }
  std::string dir = MakeTempDir("coco-smbench");
  // Sparse files only cost what is written (a few hundred MiB at 1 TiB for
  // the CDH sequence), but refuse to start on a nearly full disk.
  struct statvfs vfs {};
  if (statvfs(dir.c_str(), &vfs) != 0 || static_cast<double>(vfs.f_bavail) * vfs.f_frsize < 8.0 * GiB) {
    std::cerr << "less than 8 GiB free under " << dir << "\n";
    return 1;
  }
  std::printf("host free space under %s: %.1f GiB; start %s, load %s\n", dir.c_str(),
              static_cast<double>(vfs.f_bavail) * vfs.f_frsize / GiB, UtcNow().c_str(), HostLoad().c_str());
  GuestVmOptions opts;
  opts.memory_mib = 2048;
  opts.root_ports = 4;
  auto vm = GuestVm::Start(opts);
  if (!vm.ok() || !(*vm)->WaitAgentListening().ok()) {
    std::cerr << "VM did not start: " << vm.status() << "\n";
    return 1;
  }
  Bench b(vm->get(), dir);
  (void)b.Errors();
  std::vector<Run> runs;
  for (int r = 0; r < rounds; ++r) {
    for (int gib : sizes) {
      for (size_t k = 0; k < approaches.size(); ++k) {
        const std::string& a = approaches[(k + r) % approaches.size()];
        runs.push_back(b.One(a, gib, r));
        const Run& x = runs.back();
        std::fprintf(stderr, "round %d %-9s %5d GiB up %7.2f s down %6.2f s %8.1f MiB %s (load %s)\n", r, a.c_str(),
                     gib, x.up_s, x.down_s, x.mib_written, x.note.c_str(), HostLoad().c_str());
      }
    }
  }
  std::printf("end %s, load %s\n", UtcNow().c_str(), HostLoad().c_str());

  std::printf("\n%-10s %6s %5s %9s %9s %11s %9s %6s\n", "approach", "GiB", "round", "up s", "down s", "MiB written",
              "host MiB", "errors");
  for (const auto& x : runs)
    std::printf("%-10s %6d %5d %9.2f %9.2f %11.1f %9.1f %6zu %s\n", x.approach.c_str(), x.size_gib, x.round, x.up_s,
                x.down_s, x.mib_written, x.host_mib, x.errors, x.note.c_str());

  auto pick = [&](const std::string& a, int gib, auto field) {
    std::vector<double> v;
    for (const auto& x : runs)
      if (x.approach == a && x.size_gib == gib && field(x) >= 0) v.push_back(field(x));
    return v;
  };
  auto up = [](const Run& x) { return x.up_s; };
  auto down = [](const Run& x) { return x.down_s; };
  auto mib = [](const Run& x) { return x.up_s >= 0 ? x.mib_written : -1; };
  std::printf("\nmedian [min-max] over rounds (seconds; MiB written)\n%-10s %6s %22s %22s %22s\n", "approach", "GiB",
              "up", "down", "MiB written");
  for (const auto& a : approaches) {
    for (int gib : sizes) {
      auto cell = [&](const std::vector<double>& v) {
        if (v.empty()) return std::string("n/a");
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.2f [%.2f-%.2f]", Median(v), *std::min_element(v.begin(), v.end()),
                      *std::max_element(v.begin(), v.end()));
        return std::string(buf);
      };
      std::printf("%-10s %6d %22s %22s %22s\n", a.c_str(), gib, cell(pick(a, gib, up)).c_str(),
                  cell(pick(a, gib, down)).c_str(), cell(pick(a, gib, mib)).c_str());
    }
  }

  // Per-round ratios: both runs of a ratio come from the same round, so a
  // noisy stretch of time hits numerator and denominator alike.
  auto in_round = [&](const std::string& a, int gib, int r) -> const Run* {
    for (const auto& x : runs)
      if (x.approach == a && x.size_gib == gib && x.round == r && x.up_s >= 0) return &x;
    return nullptr;
  };
  const int big = sizes.back(), small = sizes.front();
  std::printf("\nper-round ratios (up time; goal: %d GiB / %d GiB <= 1.5x)\n", big, small);
  for (const auto& a : approaches) {
    std::printf("  %-10s %d/%d GiB up:", a.c_str(), big, small);
    std::vector<double> v;
    for (int r = 0; r < rounds; ++r) {
      const Run *s = in_round(a, small, r), *l = in_round(a, big, r);
      if (s && l) v.push_back(l->up_s / s->up_s);
      std::printf(" %s", s && l ? Fixed(l->up_s / s->up_s).c_str() : "n/a");
    }
    std::printf("  median %.2fx\n", Median(v));
    std::printf("  %-10s %d/%d GiB down:", a.c_str(), big, small);
    v.clear();
    for (int r = 0; r < rounds; ++r) {
      const Run *s = in_round(a, small, r), *l = in_round(a, big, r);
      if (s && l && s->down_s > 0 && l->down_s >= 0) v.push_back(l->down_s / s->down_s);
      std::printf(" %s", s && l && s->down_s > 0 ? Fixed(l->down_s / s->down_s).c_str() : "n/a");
    }
    std::printf("  median %.2fx\n", Median(v));
  }
  for (int gib : sizes) {
    std::printf("  %5d GiB cdh-ext4 / sm-ext4 up:", gib);
    std::vector<double> v;
    for (int r = 0; r < rounds; ++r) {
      const Run *c = in_round("cdh-ext4", gib, r), *s = in_round("sm-ext4", gib, r);
      if (c && s) v.push_back(c->up_s / s->up_s);
      std::printf(" %s", c && s ? Fixed(c->up_s / s->up_s).c_str() : "n/a");
    }
    std::printf("  median %.2fx\n", Median(v));
  }
  return 0;
}
