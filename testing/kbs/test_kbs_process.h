// The test KBS (tests/kbs/test_kbs.py, Python) as a child process: config,
// TLS material from its gen-cert, start/stop/restart on the same port, and
// its /_test/ control endpoints. Header-only scaffolding for the kbs tests.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cocostorage/common/exec.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "kbs/http_client.h"

extern char** environ;

namespace cocostorage::testing {

class TestKbsProcess {
 public:
  // `dir` holds config, certificates, port file and logs. `hosts` = the
  // names/IPs the server certificate is valid for.
  TestKbsProcess(std::string dir, std::vector<std::string> hosts = {"127.0.0.1"}) : dir_(std::move(dir)) {
    auto runner = NewSystemCommandRunner();
    CommandSpec spec{{"/usr/bin/python3", Script(), "gen-cert", "--out-dir", dir_}};
    for (const auto& h : hosts) {
      spec.argv.push_back("--host");
      spec.argv.push_back(h);
    }
    auto r = runner->Run(spec);
    cert_ok_ = r.ok() && r->exit_code == 0;
  }
  ~TestKbsProcess() { Stop(); }

  static std::string Script() { return Cat(COCOSTORAGE_SOURCE_DIR, "/tests/kbs/test_kbs.py"); }
  std::string ca_bundle() const { return dir_ + "/ca.pem"; }
  std::string log_path() const { return dir_ + "/requests.log"; }
  int port() const { return port_; }
  std::string url(const std::string& host = "127.0.0.1") const { return Cat("https://", host, ":", port_); }

  // Starts with `config` (admin endpoints always on) on `port` (0 = any;
  // a restart reuses the previous port). False if it did not come up.
  bool Start(nlohmann::json config, int port = -1) {
    if (!cert_ok_) return false;
    if (port < 0) port = port_;
    config["admin"] = true;
    if (!AtomicWriteFile(dir_ + "/config.json", config.dump(), 0600).ok()) return false;
    const std::string port_file = dir_ + "/port";
    unlink(port_file.c_str());
    std::vector<std::string> args = {"/usr/bin/python3",
                                     Script(),
                                     "--listen",
                                     Cat("127.0.0.1:", port),
                                     "--port-file",
                                     port_file,
                                     "--config",
                                     dir_ + "/config.json",
                                     "--tls-cert",
                                     dir_ + "/server.pem",
                                     "--tls-key",
                                     dir_ + "/server.key",
                                     "--log",
                                     log_path()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string err = dir_ + "/server.stderr";
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    // A caller that blocks SIGTERM for a signal thread (cocostorage-demo)
    // must not hand the block to the server, or Stop() would wait forever.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t empty;
    sigemptyset(&empty);
    posix_spawnattr_setsigmask(&attr, &empty);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawn(&pid_, argv[0], &fa, &attr, argv.data(), environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      auto text = ReadFileToString(port_file);
      unsigned long long p = 0;
      if (text.ok() && ParseUint64(TrimWhitespace(*text), &p) && p > 0) {
        port_ = static_cast<int>(p);
        return true;
      }
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
    return false;
  }

  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    int st = 0;
    waitpid(pid_, &st, 0);
    pid_ = -1;
  }

  // POST/GET a /_test/ endpoint; the reply body, or "" on failure.
  std::string Admin(const std::string& method, const std::string& path, const nlohmann::json& body = nullptr) {
    agent::kbs::CurlOptions o;
    o.ca_bundle = ca_bundle();
    auto http = agent::kbs::NewCurlHttpClient(o);
    if (!http.ok()) return "";
    agent::kbs::HttpRequest r{method,
                              Cat(url(), path),
                              {{"Content-Type", "application/json"}},
                              body.is_null() ? "" : body.dump(),
                              std::chrono::milliseconds(10000)};
    auto resp = (*http)->Send(r);
    return resp.ok() && resp->status == 200 ? resp->body : "";
  }
  nlohmann::json Stats() {
    auto j = nlohmann::json::parse(Admin("GET", "/_test/stats"), nullptr, false);
    return j.is_discarded() ? nlohmann::json::object() : j;
  }
  // Successful handshakes so far.
  int Attested() { return Stats().value("attested", -1); }

 private:
  std::string dir_;
  bool cert_ok_ = false;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace cocostorage::testing
