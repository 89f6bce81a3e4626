// CSI plugin benchmark: drives the real cocostorage-csi binary over its
// socket like the external-provisioner and kubelet.
//   1. latency of CreateVolume + NodeStageVolume + NodePublishVolume (a pod's
//      volume coming up) and of NodeUnpublish + NodeUnstage + DeleteVolume;
//   2. throughput: 64 pods' volumes brought up concurrently, then torn down;
//   3. the plugin's peak RSS (VmHWM from /proc/<pid>/status).
#include <sys/stat.h>
#include <sys/vfs.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "cocostorage/common/cli.h"
#include "plugin_harness.h"

namespace cocostorage::csi {
namespace {

using namespace testing;  // NOLINT
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Stats {
  double p50, p90, p99, max, mean;
};

Stats Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))]; };
  double sum = 0;
  for (double x : v) sum += x;
  return {at(0.5), at(0.9), at(0.99), v.back(), sum / static_cast<double>(v.size())};
}

long VmHwmKb(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

class Pod {
 public:
  Pod(pb::Controller::Stub* c, pb::Node::Stub* n, std::string kubelet, std::string name)
      : c_(c), n_(n), kubelet_(std::move(kubelet)), name_(std::move(name)) {}

  bool Up() {
    pb::CreateVolumeRequest creq = CreateReq(name_, int64_t{1} << 30);
    pb::CreateVolumeResponse cresp;
    if (!c_->CreateVolume(Ctx().get(), creq, &cresp).ok()) return false;
    id_ = cresp.volume().volume_id();
    staging_ = kubelet_ + "/staging-" + id_;
    std::string parent = kubelet_ + "/pod-" + id_;
    mkdir(parent.c_str(), 0750);
    target_ = parent + "/mount";
    pb::NodeStageVolumeRequest sreq;
    sreq.set_volume_id(id_);
    sreq.set_staging_target_path(staging_);
    *sreq.mutable_volume_capability() = MountCap();
    pb::NodeStageVolumeResponse sresp;
    if (!n_->NodeStageVolume(Ctx().get(), sreq, &sresp).ok()) return false;
    pb::NodePublishVolumeRequest preq;
    preq.set_volume_id(id_);
    preq.set_staging_target_path(staging_);
    preq.set_target_path(target_);
    *preq.mutable_volume_capability() = MountCap();
    pb::NodePublishVolumeResponse presp;
    return n_->NodePublishVolume(Ctx().get(), preq, &presp).ok();
  }

  bool Down() {
    pb::NodeUnpublishVolumeRequest ureq;
    ureq.set_volume_id(id_);
    ureq.set_target_path(target_);
    pb::NodeUnpublishVolumeResponse uresp;
    if (!n_->NodeUnpublishVolume(Ctx().get(), ureq, &uresp).ok()) return false;
    pb::NodeUnstageVolumeRequest usreq;
    usreq.set_volume_id(id_);
    usreq.set_staging_target_path(staging_);
    pb::NodeUnstageVolumeResponse usresp;
    if (!n_->NodeUnstageVolume(Ctx().get(), usreq, &usresp).ok()) return false;
    pb::DeleteVolumeRequest dreq;
    dreq.set_volume_id(id_);
    pb::DeleteVolumeResponse dresp;
    bool ok = c_->DeleteVolume(Ctx().get(), dreq, &dresp).ok();
    rmdir((kubelet_ + "/pod-" + id_).c_str());
    return ok;
  }

 private:
  pb::Controller::Stub* c_;
  pb::Node::Stub* n_;
  std::string kubelet_, name_, id_, staging_, target_;
};

int Run(int argc, char** argv) {
  std::string binary = CSI_PLUGIN_BINARY;
  int iterations = 200;
  int concurrency = 64;
  CLI::App app{"coco_csi_bench: CSI plugin latency and concurrency (docs/benchmarks.md)"};
  app.add_option("--plugin", binary, "cocostorage-csi binary")->capture_default_str();
  app.add_option("--iterations", iterations, "sequential cycles")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--concurrency", concurrency, "concurrent creates")->check(CLI::PositiveNumber)->capture_default_str();
  if (auto code = ParseCommandLine(app, argc, argv)) return *code;

  TempDir tmp;
  std::string kubelet = tmp.path() + "/kubelet";
  mkdir(kubelet.c_str(), 0750);
  PluginProcess plugin(
      binary, tmp.path(),
      {"--capacity-bytes=" + std::to_string(int64_t{1} << 50), "--max-volumes-per-node=0", "--log-level=warn"});
  if (!plugin.Start()) {
    std::fprintf(stderr, "plugin did not start (see %s)\n", plugin.log_path().c_str());
    return 1;
  }
  auto controller = pb::Controller::NewStub(plugin.channel());
  auto node = pb::Node::NewStub(plugin.channel());

  // Warm-up (connection, first-touch allocations).
  for (int i = 0; i < 5; ++i) {
    Pod p(controller.get(), node.get(), kubelet, "warm-" + std::to_string(i));
    if (!p.Up() || !p.Down()) return 1;
  }

  std::vector<double> up, down;
  for (int i = 0; i < iterations; ++i) {
    Pod p(controller.get(), node.get(), kubelet, "seq-" + std::to_string(i));
    auto t0 = Clock::now();
    if (!p.Up()) return 1;
    auto t1 = Clock::now();
    if (!p.Down()) return 1;
    auto t2 = Clock::now();
    up.push_back(Ms(t1 - t0));
    down.push_back(Ms(t2 - t1));
  }

  std::vector<std::unique_ptr<Pod>> pods;
  for (int i = 0; i < concurrency; ++i) {
    pods.push_back(std::make_unique<Pod>(controller.get(), node.get(), kubelet, "par-" + std::to_string(i)));
  }
  std::vector<double> par_up(concurrency), par_down(concurrency);
  std::atomic<int> failures{0};
  auto run_all = [&](bool up_phase) {
    std::vector<std::thread> threads;
    auto t0 = Clock::now();
    for (int i = 0; i < concurrency; ++i) {
      threads.emplace_back([&, i] {
        auto s = Clock::now();
        bool ok = up_phase ? pods[i]->Up() : pods[i]->Down();
        (up_phase ? par_up : par_down)[i] = Ms(Clock::now() - s);
        if (!ok) ++failures;
      });
    }
    for (auto& t : threads) t.join();
    return Ms(Clock::now() - t0);
  };
  double wall_up = run_all(true);
  double wall_down = run_all(false);
  long hwm = VmHwmKb(plugin.pid());
  if (failures.load() != 0) {
    std::fprintf(stderr, "%d concurrent operations failed\n", failures.load());
    return 1;
  }

  struct statfs fs {};
  statfs(tmp.path().c_str(), &fs);
  Stats su = Summarize(up), sd = Summarize(down), pu = Summarize(par_up), pd = Summarize(par_down);
  std::printf("cocostorage-csi benchmark (%s, temp fs magic 0x%lx, %u CPUs)\n", binary.c_str(),
              static_cast<unsigned long>(fs.f_type), std::thread::hardware_concurrency());
  std::printf("sequential, %d pods, 1 GiB ephemeral volume each, ms:\n", iterations);
  std::printf("  %-44s p50 %7.2f  p90 %7.2f  p99 %7.2f  max %7.2f  mean %7.2f\n", "CreateVolume+NodeStage+NodePublish",
              su.p50, su.p90, su.p99, su.max, su.mean);
  std::printf("  %-44s p50 %7.2f  p90 %7.2f  p99 %7.2f  max %7.2f  mean %7.2f\n",
              "NodeUnpublish+NodeUnstage+DeleteVolume", sd.p50, sd.p90, sd.p99, sd.max, sd.mean);
  std::printf("concurrent, %d pods at once:\n", concurrency);
  std::printf("  bring-up: wall %.1f ms = %.0f volumes/s; per pod p50 %.2f p99 %.2f max %.2f ms\n", wall_up,
              concurrency / (wall_up / 1000.0), pu.p50, pu.p99, pu.max);
  std::printf("  teardown: wall %.1f ms = %.0f volumes/s; per pod p50 %.2f p99 %.2f max %.2f ms\n", wall_down,
              concurrency / (wall_down / 1000.0), pd.p50, pd.p99, pd.max);
  std::printf("plugin peak RSS (VmHWM): %ld KiB\n", hwm);
  plugin.Stop(SIGTERM);
  return 0;
}

}  // namespace
}  // namespace cocostorage::csi

int main(int argc, char** argv) { return cocostorage::csi::Run(argc, argv); }
