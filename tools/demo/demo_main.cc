// cocostorage-demo: the main job end to end on one machine (see docs/e2e.md).
// A pod's volume request goes through the real CSI plugin over gRPC, the Kata
// runtime's part (mountInfo.json, QMP hot-plug, Storage), kata-agent's part
// (SecureMount over ttrpc) and the real guest agent inside a QEMU guest; then
// the host's view, a tamper attempt and a full teardown (kata-agent unmounts,
// the agent cleans up by itself) with a leak check; then a StatefulSet's
// persistent claim (generated policy, KBS key) created in one VM and read
// back in a new one after a plugin restart.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "cocostorage/common/cli.h"
#include "cocostorage/common/log.h"
#include "flow.h"

int main(int argc, char** argv) {
  using namespace cocostorage;
  e2e::FlowOptions o;
  bool verbose = false;
  CLI::App app{"cocostorage-demo: the main job end to end on one machine (docs/e2e.md)"};
  app.add_option("--csi-binary", o.csi_binary, "default: $COCOSTORAGE_CSI_BINARY or the build tree's cocostorage-csi");
  app.add_option("--image-dir", o.image_dir, "default: $COCOSTORAGE_VM_IMAGE_DIR or the build tree's guest image");
  app.add_option("--qemu", o.qemu_binary, "QEMU binary")->capture_default_str();
  app.add_option("--memory-mib", o.vm_memory_mib, "guest memory")->check(CLI::Range(512, 65536))->capture_default_str();
  app.add_flag("--verbose", verbose, "also print the harness's log lines");
  if (auto code = ParseCommandLine(app, argc, argv)) return *code;
  // The harness's structured log lines (vm.launch...) would break the
  // progress lines; --verbose keeps them.
  log::Init("demo", verbose ? log::Level::kInfo : log::Level::kWarn);
  // Ctrl-C / SIGTERM: QEMU and the plugin die with us (PR_SET_PDEATHSIG);
  // the work dir (a 10 GB sparse file) is removed here. Signals are blocked
  // before any thread starts and taken by one thread.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  auto work = e2e::TempDir::Make("/tmp", "cocoDemo");
  if (!work.ok()) {
    std::fprintf(stderr, "cocostorage-demo: %s\n", std::string(work.status().message()).c_str());
    return 1;
  }
  o.temp_parent = work->path();
  std::thread([&sigs, dir = work->path()] {
    int sig = 0;
    if (sigwait(&sigs, &sig) != 0) return;
    std::fprintf(stderr, "\ncocostorage-demo: interrupted (signal %d); removing %s\n", sig, dir.c_str());
    (void)e2e::RemoveTree(dir);
    _exit(128 + sig);
  }).detach();
  e2e::DemoResult result;
  Status s = e2e::RunDemo(o, stdout, &result);
  if (!s.ok()) {
    std::fprintf(stderr, "\ncocostorage-demo: FAILED: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("\ncocostorage-demo: OK\n");
  return 0;
}
