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

#include "cocostorage/common/cli.h"
#include "cocostorage/common/strings.h"
#include "guest_vm.h"

namespace {

using cocostorage::Cat;
using cocostorage::Split;
using namespace cocostorage::vmtest;

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

int ExecMain(int port, long timeout_s, const std::vector<std::string>& cmd) {
  auto r = GuestExecAt(port, JoinArgs(cmd), std::chrono::seconds(timeout_s));
  if (!r.ok()) {
    std::fprintf(stderr, "coco-vm: %s\n", r.status().ToString().c_str());
    return 1;
  }
  return Print(*r);
}

}  // namespace

int main(int argc, char** argv) {
  GuestVmOptions opts;
  struct Disk {
    std::string path, serial;
    long size_mib;
  };
  std::vector<Disk> disks;
  std::vector<std::string> command, disk_args;
  std::string image_dir;
  bool keep = false, no_agent = false;
  CLI::App app{"coco-vm: boot the VM harness guest by hand (docs/vm-harness.md)"};
  app.add_option("--image-dir", image_dir, "kernel + initrd directory");
  app.add_option("--memory", opts.memory_mib, "guest memory, MiB")->check(CLI::Range(256, 65536));
  app.add_option("--disk", disk_args, "PATH:SERIAL[:SIZE_MIB] to hot-plug (created sparse if missing)");
  app.add_option("--agent-env", opts.agent_env, "K=V for the agent");
  app.add_option("--agent-arg", opts.agent_extra_args, "extra agent argument");
  app.add_flag("--no-agent", no_agent, "boot without starting the agent");
  app.add_flag("--keep", keep, "leave the VM running");
  app.add_option("command", command, "run this in the guest (after --), else read commands from stdin");
  int port = -1;
  long timeout_s = 600;
  std::vector<std::string> exec_cmd;
  auto* exec = app.add_subcommand("exec", "run a command through the guest-exec port of a VM left running");
  exec->add_option("--port", port, "guest-exec host port")->required();
  exec->add_option("--timeout", timeout_s, "seconds");
  exec->add_option("command", exec_cmd, "the command")->required();
  if (auto code = cocostorage::ParseCommandLine(app, argc, argv)) return *code;
  if (exec->parsed()) return ExecMain(port, timeout_s, exec_cmd);
  if (!image_dir.empty()) {
    opts.kernel = image_dir + "/vmlinuz";
    opts.initrd = image_dir + "/initrd.gz";
  }
  opts.start_agent = !no_agent;
  for (const auto& d : disk_args) {
    auto parts = Split(d, ':');
    char* end = nullptr;
    long size = parts.size() == 3 ? std::strtol(parts[2].c_str(), &end, 10) : 256;
    if (parts.size() < 2 || parts.size() > 3 || (parts.size() == 3 && (*end != '\0' || size <= 0))) {
      std::fprintf(stderr, "coco-vm: --disk=PATH:SERIAL[:SIZE_MIB]\n");
      return 2;
    }
    disks.push_back({parts[0], parts[1], size});
  }
  if (keep) setenv("COCOSTORAGE_VM_KEEP", "1", 1);
  auto vm_or = GuestVm::Start(opts);
  if (!vm_or.ok()) {
    std::fprintf(stderr, "coco-vm: %s\n", vm_or.status().ToString().c_str());
    return 1;
  }
  auto vm = std::move(vm_or).value();
  std::fprintf(stderr, "coco-vm: ready in %.1f s; guest-exec 127.0.0.1:%d, agent %s, console %s\n", vm->BootSeconds(),
               vm->ExecHostPort(), vm->AgentTarget().c_str(), vm->ConsoleLogPath().c_str());
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
