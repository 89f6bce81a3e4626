// A VM harness guest whose agent takes its keys from a test KBS on the host
// (over QEMU's user network, 10.0.2.2 = host loopback, HTTPS with the test
// CA), and what its log says about an activation. Header-only scaffolding for
// the kbs VM tests and the persistent-volume benchmarks.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "agent_vm_support.h"
#include "cocostorage/common/base64.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "test_kbs_process.h"

namespace cocostorage::vmtest {

// A VM whose agent is a KBS client of `kbs` (with the test CA), without a
// storage policy.
inline StatusOr<std::unique_ptr<GuestVm>> BootKbsGuest(const cocostorage::testing::TestKbsProcess& kbs) {
  GuestVmOptions opts;
  opts.memory_mib = 2048;
  opts.root_ports = 16;
  COCO_ASSIGN_OR_RETURN(std::unique_ptr<GuestVm> vm, GuestVm::Start(opts));
  COCO_RETURN_IF_ERROR(vm->WaitAgentListening());
  COCO_ASSIGN_OR_RETURN(std::string ca, ReadFileToString(kbs.ca_bundle()));
  COCO_RETURN_IF_ERROR(
      vm->ExecOk(Cat("mkdir -p /run/kbs && echo ", Base64Encode(ca), " | base64 -d > /run/kbs/ca.pem")).status());
  COCO_RETURN_IF_ERROR(vm->StopAgent());
  COCO_RETURN_IF_ERROR(vm->SetAgentCommandLine(
      {"--listen=tcp://0.0.0.0:7001", Cat("--storage-root=", kStorageRoot), "--state-dir=/run/cocostorage",
       "--key-provider=kbs", Cat("--kbs-url=", kbs.url("10.0.2.2")), "--kbs-ca-bundle=/run/kbs/ca.pem",
       "--attester=sample", "--insecure-test-build", "--insecure-no-storage-policy"},
      {}));
  COCO_RETURN_IF_ERROR(vm->StartAgent());
  COCO_RETURN_IF_ERROR(vm->WaitAgentListening());
  return vm;
}

// The "action" of the last `volume.activated` line the agent logged for `id`
// ("format" for an ephemeral volume, "create" or "open" for a persistent
// one); empty if there is none.
inline std::string LastActivatedAction(GuestVm* vm, const std::string& id) {
  auto log = vm->AgentLog();
  if (!log.ok()) return "";
  std::string action;
  std::istringstream in(*log);
  for (std::string line; std::getline(in, line);) {
    if (line.find("volume.activated") == std::string::npos ||
        line.find(Cat("\"volume\":\"", id, "\"")) == std::string::npos)
      continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("action")) action = j["action"].get<std::string>();
  }
  return action;
}

}  // namespace cocostorage::vmtest
