// Load with crashes (issue 15, docs/reliability.md): many volumes driven
// through their whole CSI life cycle at once, the way the external-provisioner
// and kubelet retry, while the real plugin binary is SIGKILLed at random
// moments and restarted on the same directories. Every volume must end where
// its retries lead (published with its own descriptor, then gone), and
// nothing may be left behind: no backing file, record, descriptor or target.
//
// Default bound: 32 volumes, 6 rounds (label csi, ~5 s). Longer:
//   COCO_LOAD_VOLUMES=64 COCO_LOAD_ROUNDS=20 ctest -R csi.load_restart.soak -V   (label soak)
#include <dirent.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cocostorage/common/base64.h"
#include "cocostorage/common/fs_util.h"
#include "plugin_harness.h"

namespace cocostorage::csi {
namespace {

namespace pb = ::csi::v1;
using testing::BlockCap;
using testing::CreateReq;
using testing::MountCap;
using testing::PluginProcess;
using testing::TempDir;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && std::atoi(v) > 0 ? std::atoi(v) : fallback;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  closedir(d);
  return out;
}

// "" when unreadable: only ever shown or searched.
std::string ReadFile(const std::string& path) { return ReadFileToString(path).value_or(""); }

struct Counters {
  std::atomic<int> answered{0};  // answers a CO acts on (not retried)
  std::atomic<int> calls{0};
  std::atomic<int> retries{0};  // answers that a CO retries (plugin down, deadline)
  std::atomic<int> volumes{0};  // volumes that went through a whole life cycle
};

// One CO-side connection: fast reconnects, since the plugin comes back
// within a few hundred milliseconds.
std::shared_ptr<grpc::Channel> CoChannel(const std::string& socket) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 20);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 20);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  return grpc::CreateCustomChannel("unix://" + socket, grpc::InsecureChannelCredentials(), args);
}

// Calls `rpc` until it answers something other than what a CO retries on a
// plugin restart (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED); returns that.
template <typename Fn>
grpc::Status Retry(Counters& c, Fn rpc) {
  for (int attempt = 0; attempt < 2000; ++attempt) {
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ++c.calls;
    grpc::Status s = rpc(&ctx);
    const auto code = s.error_code();
    if (code != grpc::StatusCode::UNAVAILABLE && code != grpc::StatusCode::DEADLINE_EXCEEDED &&
        code != grpc::StatusCode::CANCELLED) {
      ++c.answered;
      return s;
    }
    ++c.retries;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "gave up after 2000 attempts");
}

class LoadRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kubelet_ = tmp_.path() + "/kubelet";
    ASSERT_EQ(mkdir(kubelet_.c_str(), 0750), 0);
    plugin_ = std::make_unique<PluginProcess>(CSI_PLUGIN_BINARY, tmp_.path(),
                                              std::vector<std::string>{"--max-volumes-per-node=0"});
    ASSERT_TRUE(plugin_->Start()) << ReadFile(plugin_->log_path());
  }

  // The whole life of volume `name`, each step retried like a CO does.
  // Returns "" or what went wrong.
  std::string LifeCycle(pb::Controller::Stub& ctl, pb::Node::Stub& node, const std::string& name, bool block,
                        Counters& c) {
    const pb::VolumeCapability cap = block ? BlockCap() : MountCap();
    pb::CreateVolumeResponse created;
    grpc::Status s = Retry(
        c, [&](grpc::ClientContext* ctx) { return ctl.CreateVolume(ctx, CreateReq(name, 16 << 20, cap), &created); });
    if (!s.ok()) return "CreateVolume: " + s.error_message();
    const std::string id = created.volume().volume_id();
    const std::string staging = kubelet_ + "/staging-" + name;
    const std::string parent = kubelet_ + "/pod-" + name;
    mkdir(parent.c_str(), 0750);  // kubelet makes the parent
    const std::string target = parent + "/mount";

    pb::NodeStageVolumeRequest stage;
    stage.set_volume_id(id);
    stage.set_staging_target_path(staging);
    *stage.mutable_volume_capability() = cap;
    pb::NodeStageVolumeResponse staged;
    s = Retry(c, [&](grpc::ClientContext* ctx) { return node.NodeStageVolume(ctx, stage, &staged); });
    if (!s.ok()) return "NodeStageVolume: " + s.error_message();

    pb::NodePublishVolumeRequest pub;
    pub.set_volume_id(id);
    pub.set_staging_target_path(staging);
    pub.set_target_path(target);
    *pub.mutable_volume_capability() = cap;
    pb::NodePublishVolumeResponse published;
    s = Retry(c, [&](grpc::ClientContext* ctx) { return node.NodePublishVolume(ctx, pub, &published); });
    if (!s.ok()) return "NodePublishVolume: " + s.error_message();
    // What Kata would read: this volume's descriptor naming its own backing.
    const std::string info = ReadFile(plugin_->kata_root() + "/" + Base64UrlEncode(target) + "/mountInfo.json");
    auto j = nlohmann::json::parse(info, nullptr, false);
    if (j.is_discarded() || j.value("device", "") != plugin_->backing_root() + "/" + id + ".img" ||
        j["metadata"].value("cocostorage.dev/volumeId", "") != id) {
      return "mountInfo.json after publish is not this volume's: " + info;
    }

    pb::NodeUnpublishVolumeRequest unpub;
    unpub.set_volume_id(id);
    unpub.set_target_path(target);
    pb::NodeUnpublishVolumeResponse unpublished;
    s = Retry(c, [&](grpc::ClientContext* ctx) { return node.NodeUnpublishVolume(ctx, unpub, &unpublished); });
    if (!s.ok()) return "NodeUnpublishVolume: " + s.error_message();
    pb::NodeUnstageVolumeRequest unstage;
    unstage.set_volume_id(id);
    unstage.set_staging_target_path(staging);
    pb::NodeUnstageVolumeResponse unstaged;
    s = Retry(c, [&](grpc::ClientContext* ctx) { return node.NodeUnstageVolume(ctx, unstage, &unstaged); });
    if (!s.ok()) return "NodeUnstageVolume: " + s.error_message();
    pb::DeleteVolumeRequest del;
    del.set_volume_id(id);
    pb::DeleteVolumeResponse deleted;
    s = Retry(c, [&](grpc::ClientContext* ctx) { return ctl.DeleteVolume(ctx, del, &deleted); });
    if (!s.ok()) return "DeleteVolume: " + s.error_message();
    rmdir(parent.c_str());  // kubelet removes the pod dir
    ++c.volumes;
    return "";
  }

  TempDir tmp_;
  std::string kubelet_;
  std::unique_ptr<PluginProcess> plugin_;
};

TEST_F(LoadRestartTest, EveryVolumeSurvivesRandomKillsAndNothingLeaks) {
  const int volumes = EnvInt("COCO_LOAD_VOLUMES", 32);
  const int rounds = EnvInt("COCO_LOAD_ROUNDS", 6);
  constexpr int kWorkers = 8;
  Counters c;
  std::atomic<bool> done{false};
  std::atomic<int> kills{0};
  std::mutex errors_mu;
  std::vector<std::string> errors;

  // The killer: after each restart it lets 1-8 calls be answered (so the
  // campaign progresses however slow the build: a TSan plugin takes seconds
  // to start), then SIGKILLs at a random moment 0-100 ms later and starts the
  // plugin again on the same directories. A kill thus lands in any call.
  std::thread killer([&] {
    std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<int> calls_between(1, 8);
    std::uniform_int_distribution<int> wait_ms(0, 100);
    while (!done) {
      const int until = c.answered + calls_between(rng);
      while (!done && c.answered < until) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms(rng)));
      if (done) break;
      plugin_->Stop(SIGKILL);
      ++kills;
      if (!plugin_->Start()) {
        std::lock_guard l(errors_mu);
        errors.push_back("the plugin did not restart: " + ReadFile(plugin_->log_path()));
        return;
      }
    }
  });

  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      auto channel = CoChannel(plugin_->socket());
      auto ctl = pb::Controller::NewStub(channel);
      auto node = pb::Node::NewStub(channel);
      for (int round = 0; round < rounds; ++round) {
        for (int v = w; v < volumes; v += kWorkers) {
          const std::string name = "load-r" + std::to_string(round) + "-v" + std::to_string(v);
          std::string err = LifeCycle(*ctl, *node, name, v % 3 == 0, c);
          if (!err.empty()) {
            std::lock_guard l(errors_mu);
            errors.push_back(name + ": " + err);
          }
        }
      }
    });
  }
  for (auto& t : workers) t.join();
  done = true;
  killer.join();
  for (const auto& e : errors) ADD_FAILURE() << e;

  // A final restart, then nothing of any volume may remain.
  plugin_->Stop(SIGKILL);
  ASSERT_TRUE(plugin_->Start()) << ReadFile(plugin_->log_path());
  // A CreateVolume killed between its backing file and its record leaves a
  // file no record names and no byte was written to: the restarted plugin
  // removes it (one with bytes would be set aside, docs/csi.md).
  EXPECT_EQ(ListDir(plugin_->backing_root()), std::vector<std::string>{});
  const std::string log = ReadFile(plugin_->log_path());
  int orphans = 0;
  for (size_t at = log.find("state.orphan_removed"); at != std::string::npos;
       at = log.find("state.orphan_removed", at + 1)) {
    ++orphans;
  }
  EXPECT_EQ(ListDir(plugin_->state_dir()), std::vector<std::string>{});
  EXPECT_EQ(ListDir(plugin_->kata_root()), std::vector<std::string>{});
  std::vector<std::string> kubelet_left;
  for (const auto& n : ListDir(kubelet_)) {
    if (n.rfind("staging-", 0) != 0) kubelet_left.push_back(n);  // staging paths are kubelet's, never ours
  }
  EXPECT_EQ(kubelet_left, std::vector<std::string>{});
  EXPECT_EQ(c.volumes.load(), volumes * rounds);
  EXPECT_GE(kills.load(), 3) << "too few kills to mean anything";
  std::printf(
      "load_restart: %d volumes x %d rounds, %d life cycles done, %d plugin kills survived, %d calls, %d retried, "
      "%d uncommitted creates cleaned up at restart\n",
      volumes, rounds, c.volumes.load(), kills.load(), c.calls.load(), c.retries.load(), orphans);
}

}  // namespace
}  // namespace cocostorage::csi
