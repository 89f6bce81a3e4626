// A real single-node Ceph cluster for one test suite (ceph-cluster.sh in this
// directory): started in a fresh directory under /var/tmp, stopped and
// removed by the destructor (kept with COCOSTORAGE_KEEP_TMP=1).
#pragma once

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "cocostorage/common/strings.h"
#include "cocostorage/testing/temp_dir.h"

namespace cocostorage::testing {

// Runs a shell command; its stdout, and its exit status in *rc.
inline std::string Shell(const std::string& cmd, int* rc = nullptr) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int status = pclose(p);
  if (rc != nullptr) *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::string TrimNewlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class TestCephCluster {
 public:
  TestCephCluster() = default;
  TestCephCluster(const TestCephCluster&) = delete;
  TestCephCluster& operator=(const TestCephCluster&) = delete;
  ~TestCephCluster() {
    if (!dir_) return;
    (void)Shell(Cat(CEPH_CLUSTER_SCRIPT, " stop ", dir_->path(), " 2>&1"));
    if (std::getenv("COCOSTORAGE_KEEP_TMP") != nullptr) dir_->Keep();
  }

  // "" on success, else what went wrong (with the daemons' log tails).
  std::string Start() {
    // Under /var/tmp: the OSD's 4 GiB block file is sparse, but not for tmpfs.
    auto dir = TempDir::Make("/var/tmp", "coco-ceph");
    if (!dir.ok()) return std::string(dir.status().message());
    dir_.emplace(std::move(*dir));
    int rc = 0;
    std::string out = Shell(Cat(CEPH_CLUSTER_SCRIPT, " start ", dir_->path(), " 2>&1"), &rc);
    if (rc != 0) return out;
    const std::string conf = ReadWholeFile(conf_path());
    const auto at = conf.find("mon host = ");
    if (at == std::string::npos) return "no mon host in ceph.conf";
    mon_host_ = conf.substr(at + 11, conf.find('\n', at) - at - 11);
    csi_key_ = TrimNewlines(ReadWholeFile(Cat(dir_->path(), "/csi.key")));
    return csi_key_.empty() ? "no client.csi key" : "";
  }

  std::string dir() const { return dir_ ? dir_->path() : ""; }
  std::string conf_path() const { return Cat(dir(), "/ceph.conf"); }
  const std::string& mon_host() const { return mon_host_; }
  // client.csi: `profile rbd` on pool rbd, what a provisioner secret holds.
  const std::string& csi_key() const { return csi_key_; }
  std::string csi_keyring() const { return Cat(dir(), "/csi.keyring"); }
  // As client.admin, independent of the code under test (rbd, rados, ceph).
  std::string Admin(const std::string& cmd) const {
    return Shell(Cat("export CEPH_CONF=", conf_path(), "; ", cmd, " 2>&1"));
  }
  // Concatenated bytes of every RADOS object of an image (its data objects,
  // rbd_data.<id>.*), for checks of what the cluster stores.
  std::string ImageObjects(const std::string& pool, const std::string& image) const {
    const std::string prefix =
        TrimNewlines(Admin(Cat("rbd info ", pool, "/", image, " | awk '/block_name_prefix/ {print $2}'")));
    if (prefix.empty()) return "";
    const std::string out = Cat(dir(), "/objects.bin");
    (void)Admin(Cat("rm -f ", out, "; for o in $(rados -p ", pool, " ls | grep '^", prefix,
                    "\\.' | sort); do rados -p ", pool, " get $o - >> ", out, "; done"));
    return ReadWholeFile(out);
  }

 private:
  std::optional<TempDir> dir_;
  std::string mon_host_;
  std::string csi_key_;
};

}  // namespace cocostorage::testing
