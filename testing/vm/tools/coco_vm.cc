// coco-vm: boots the harness guest by hand, for debugging and demos.
//
//   coco-vm [--image-dir=DIR] [--memory=MIB] [--disk=PATH:SERIAL[:SIZE_MIB]]...
//           [--agent-env=K=V]... [--agent-arg=ARG]... [--no-agent] [--keep] [-- COMMAND...]
//       Boots, hot-plugs the disks (a missing PATH is created sparse, 256 MiB
//       by default) and prints the ports. With COMMAND: runs it in the guest,
//       prints its output and exits with its status. Without: reads commands
//       from stdin, one per line, until EOF. --keep leaves the VM running.
//   coco-vm exec --port=HOSTPORT [--timeout=S] COMMAND...
//       Runs COMMAND through the guest-exec port of a VM left running.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "cocostorage/common/strings.h"
#include "guest_vm.h"

namespace {

using cocostorage::Cat;
using cocostorage::Split;
using namespace cocostorage::vmtest;

bool StartsWith(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

int Print(const ExecResult& r) {
  std::fwrite(r.out.data(), 1, r.out.size(), stdout);
  std::fwrite(r.err.data(), 1, r.err.size(), stderr);
  std::fflush(stdout);
  if (r.timed_out) std::fprintf(stderr, "coco-vm: command timed out\n");
  return r.exit_code >= 0 ? r.exit_code : 128 + r.term_signal;
}

std::string JoinArgs(const std::vector<std::string>& args) {
  std::string cmd;
  for (const auto& a : args) cmd += (cmd.empty() ? "" : " ") + a;
  return cmd;
}

int ExecMain(int argc, char** argv) {
  int port = -1;
  long timeout_s = 600;
  std::vector<std::string> cmd;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (cmd.empty() && StartsWith(a, "--port=")) {
      port = std::atoi(a.c_str() + 7);
    } else if (cmd.empty() && StartsWith(a, "--timeout=")) {
      timeout_s = std::atol(a.c_str() + 10);
    } else {
      cmd.push_back(a);
    }
  }
  if (port <= 0 || cmd.empty()) {
    std::fprintf(stderr, "usage: coco-vm exec --port=HOSTPORT [--timeout=S] COMMAND...\n");
    return 2;
  }
  auto r = GuestExecAt(port, JoinArgs(cmd), std::chrono::seconds(timeout_s));
  if (!r.ok()) {
    std::fprintf(stderr, "coco-vm: %s\n", r.status().ToString().c_str());
    return 1;
  }
  return Print(*r);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "exec") return ExecMain(argc, argv);
  GuestVmOptions opts;
  struct Disk {
    std::string path, serial;
    long size_mib;
  };
  std::vector<Disk> disks;
  std::vector<std::string> command;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      for (++i; i < argc; ++i) command.push_back(argv[i]);
    } else if (StartsWith(a, "--image-dir=")) {
      opts.kernel = a.substr(12) + "/vmlinuz";
      opts.initrd = a.substr(12) + "/initrd.gz";
    } else if (StartsWith(a, "--memory=")) {
      opts.memory_mib = std::atoi(a.c_str() + 9);
    } else if (StartsWith(a, "--disk=")) {
      auto parts = Split(a.substr(7), ':');
      if (parts.size() < 2 || parts.size() > 3) {
        std::fprintf(stderr, "coco-vm: --disk=PATH:SERIAL[:SIZE_MIB]\n");
        return 2;
      }
      disks.push_back({parts[0], parts[1], parts.size() == 3 ? std::atol(parts[2].c_str()) : 256});
    } else if (StartsWith(a, "--agent-env=")) {
      opts.agent_env.push_back(a.substr(12));
    } else if (StartsWith(a, "--agent-arg=")) {
      opts.agent_extra_args.push_back(a.substr(12));
    } else if (a == "--no-agent") {
      opts.start_agent = false;
    } else if (a == "--keep") {
      keep = true;
    } else {
      std::fprintf(stderr, "coco-vm: unknown argument %s (see the comment at the top of coco_vm.cc)\n", a.c_str());
      return 2;
    }
  }
  if (keep) setenv("COCOSTORAGE_VM_KEEP", "1", 1);
  auto vm_or = GuestVm::Start(opts);
  if (!vm_or.ok()) {
    std::fprintf(stderr, "coco-vm: %s\n", vm_or.status().ToString().c_str());
    return 1;
  }
  auto vm = std::move(vm_or).value();
  std::fprintf(stderr, "coco-vm: ready in %.1f s; guest-exec 127.0.0.1:%d, agent %s, console %s\n",
               vm->BootSeconds(), vm->ExecHostPort(), vm->AgentTarget().c_str(), vm->ConsoleLogPath().c_str());
  int n = 0;
  for (const auto& d : disks) {
    if (::access(d.path.c_str(), F_OK) != 0) {
      int fd = ::open(d.path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
      if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(d.size_mib) << 20) != 0) {
        std::perror(("coco-vm: creating " + d.path).c_str());
        return 1;
      }
      ::close(fd);
    }
    auto pci = vm->Hotplug(d.path, Cat("disk", n++), d.serial);
    if (!pci.ok()) {
      std::fprintf(stderr, "coco-vm: hot-plug %s: %s\n", d.path.c_str(), pci.status().ToString().c_str());
      return 1;
    }
    auto dev = vm->WaitForDisk(d.serial);
    std::fprintf(stderr, "coco-vm: %s -> PCI path %s, guest %s\n", d.path.c_str(), pci->c_str(),
                 dev.ok() ? dev->c_str() : dev.status().ToString().c_str());
  }
  if (!command.empty()) {
    auto r = vm->Exec(JoinArgs(command), std::chrono::minutes(30));
    if (!r.ok()) {
      std::fprintf(stderr, "coco-vm: %s\n", r.status().ToString().c_str());
      return 1;
    }
    return Print(*r);
  }
  std::string line;
  std::fprintf(stderr, "coco-vm: one command per line; EOF (Ctrl-D) stops the VM\n");
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    auto r = vm->Exec(line, std::chrono::minutes(30));
    if (!r.ok()) {
      std::fprintf(stderr, "coco-vm: %s\n", r.status().ToString().c_str());
      if (!vm->Alive()) return 1;
      continue;
    }
    int rc = Print(*r);
    if (rc != 0) std::fprintf(stderr, "[exit %d]\n", rc);
  }
  return 0;
}
