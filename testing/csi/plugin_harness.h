// Runs the real cocostorage-csi binary as a subprocess on a unix socket in a
// short temp dir (temp backing root, state dir and Kata dir), and talks to it
// over gRPC the way kubelet and the external-provisioner do. Shared by the
// conformance suite and the benchmark.
#pragma once

#include <fcntl.h>
#include <ftw.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cocostorage/testing/temp_dir.h"
#include "csi/v1/csi.grpc.pb.h"

extern char** environ;

namespace cocostorage::csi::testing {

namespace pb = ::csi::v1;

// The common test TempDir (common/testing), made in the constructor: a
// harness cannot go on without one. /tmp/csiT.XXXXXX: short, for unix
// socket paths (107 bytes). CSI_KEEP_TMP=1 keeps it for debugging.
class TempDir {
 public:
  TempDir() : dir_(Make()) {}
  const std::string& path() const { return dir_.path(); }

 private:
  static cocostorage::testing::TempDir Make() {
    auto d = cocostorage::testing::TempDir::Make("/tmp", "csiT");
    if (!d.ok()) {
      std::fprintf(stderr, "csi test harness: %s\n", d.status().ToString().c_str());
      std::abort();
    }
    if (std::getenv("CSI_KEEP_TMP") != nullptr) d->Keep();
    return std::move(*d);
  }
  cocostorage::testing::TempDir dir_;
};

class PluginProcess {
 public:
  // Directories live under `root`; extra flags are appended.
  PluginProcess(std::string binary, std::string root, std::vector<std::string> extra_flags)
      : binary_(std::move(binary)), root_(std::move(root)), extra_(std::move(extra_flags)) {}
  ~PluginProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int st = 0;
      waitpid(pid_, &st, 0);
    }
  }

  std::string socket() const { return root_ + "/csi.sock"; }
  std::string backing_root() const { return root_ + "/backing"; }
  std::string state_dir() const { return root_ + "/state"; }
  std::string kata_root() const { return root_ + "/kata"; }
  // Request paths must lie below it; callers create it (kubelet's own dir).
  std::string kubelet_root() const { return root_ + "/kubelet"; }
  std::string log_path() const { return root_ + "/plugin.log"; }
  pid_t pid() const { return pid_; }

  // Starts the plugin and waits until it answers Probe. False on failure.
  bool Start() {
    std::vector<std::string> args = {binary_,
                                     "--endpoint=unix://" + socket(),
                                     "--node-id=node-a",
                                     "--backing-root=" + backing_root(),
                                     "--state-dir=" + state_dir(),
                                     "--kata-direct-volume-root=" + kata_root(),
                                     "--kubelet-root=" + kubelet_root()};
    args.insert(args.end(), extra_.begin(), extra_.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    unlink(socket().c_str());  // a SIGKILLed predecessor leaves its socket
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawn(&pid_, binary_.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      pid_ = -1;
      return false;
    }
    // Connect only once the socket exists: a refused first connection would
    // put the channel into reconnect backoff (seconds).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    struct stat sst {};
    while (lstat(socket().c_str(), &sst) != 0 || !S_ISSOCK(sst.st_mode)) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_ || std::chrono::steady_clock::now() > deadline) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    channel_ = grpc::CreateChannel("unix://" + socket(), grpc::InsecureChannelCredentials());
    auto identity = pb::Identity::NewStub(channel_);
    while (std::chrono::steady_clock::now() < deadline) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      grpc::ClientContext ctx;
      ctx.set_wait_for_ready(true);
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
      pb::ProbeResponse resp;
      if (identity->Probe(&ctx, pb::ProbeRequest(), &resp).ok() && resp.ready().value()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // Sends `sig` and waits for exit; returns the wait status (or -1). Callers
  // drop their stubs first: an idle C++ client connection is only serviced by
  // gRPC's 5 s backup poller, which would delay the server's graceful close.
  int Stop(int sig = SIGTERM) {
    if (pid_ <= 0) return -1;
    channel_.reset();
    kill(pid_, sig);
    int st = 0;
    waitpid(pid_, &st, 0);
    pid_ = -1;
    channel_.reset();
    return st;
  }

  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

 private:
  std::string binary_;
  std::string root_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
};

// Builders for the requests kubelet and external-provisioner send.
inline pb::VolumeCapability MountCap(
    pb::VolumeCapability::AccessMode::Mode mode = pb::VolumeCapability::AccessMode::SINGLE_NODE_WRITER,
    const std::string& fs_type = "") {
  pb::VolumeCapability c;
  c.mutable_mount()->set_fs_type(fs_type);
  c.mutable_access_mode()->set_mode(mode);
  return c;
}

inline pb::VolumeCapability BlockCap(
    pb::VolumeCapability::AccessMode::Mode mode = pb::VolumeCapability::AccessMode::SINGLE_NODE_WRITER) {
  pb::VolumeCapability c;
  c.mutable_block();
  c.mutable_access_mode()->set_mode(mode);
  return c;
}

inline pb::CreateVolumeRequest CreateReq(const std::string& name, int64_t bytes,
                                         const pb::VolumeCapability& cap = MountCap()) {
  pb::CreateVolumeRequest r;
  r.set_name(name);
  r.mutable_capacity_range()->set_required_bytes(bytes);
  *r.add_volume_capabilities() = cap;
  (*r.mutable_parameters())["keySource"] = "ephemeral";
  (*r.mutable_parameters())["csi.storage.k8s.io/pvc/name"] = "data";
  return r;
}

inline std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 30) {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return c;
}

}  // namespace cocostorage::csi::testing
