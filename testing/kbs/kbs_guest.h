// A guest whose agent gets persistent keys from the test KBS on the host
// (over QEMU's user network, 10.0.2.2 = host loopback, with the test CA):
// shared by the KBS, persistent-volume and crash suites and the persistent
// benchmarks.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "agent_vm_support.h"
#include "cocostorage/common/base64.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "test_kbs_process.h"

namespace cocostorage::vmtest {

inline constexpr char kGuestInitDataPath[] = "/run/confidential-containers/initdata/initdata.toml";

// The agent's command line as a KBS client; with `policy`, the init-data
// holding it is checked against its digest (as the TEE's launch field
// would be), else the agent runs without a storage policy.
inline std::vector<std::string> KbsAgentArgs(const ::cocostorage::testing::TestKbsProcess& kbs,
                                             const std::string& policy = "") {
  std::vector<std::string> args = {"--listen=tcp://0.0.0.0:7001",
                                   Cat("--storage-root=", kStorageRoot),
                                   "--state-dir=/run/cocostorage",
                                   "--key-provider=kbs",
                                   Cat("--kbs-url=", kbs.url("10.0.2.2")),
                                   "--kbs-ca-bundle=/run/kbs/ca.pem",
                                   "--attester=sample",
                                   "--insecure-test-build"};
  if (policy.empty()) {
    args.push_back("--insecure-no-storage-policy");
  } else {
    args.insert(args.end(), {"--policy-verifier=configured-digest", Cat("--init-data=", kGuestInitDataPath),
                             Cat("--init-data-digest=", Sha256Hex(InitDataToml(policy)))});
  }
  return args;
}

// A new VM running the agent with KbsAgentArgs(kbs, policy).
inline StatusOr<std::unique_ptr<GuestVm>> BootKbsGuest(const ::cocostorage::testing::TestKbsProcess& kbs,
                                                       const std::string& policy = "") {
  GuestVmOptions opts;
  opts.memory_mib = 2048;
  opts.root_ports = 16;
  COCO_ASSIGN_OR_RETURN(std::unique_ptr<GuestVm> vm, GuestVm::Start(opts));
  COCO_RETURN_IF_ERROR(vm->WaitAgentListening());
  COCO_ASSIGN_OR_RETURN(std::string ca, ReadFileToString(kbs.ca_bundle()));
  COCO_RETURN_IF_ERROR(
      vm->ExecOk(Cat("mkdir -p /run/kbs && echo ", Base64Encode(ca), " | base64 -d > /run/kbs/ca.pem")).status());
  if (!policy.empty()) {
    COCO_RETURN_IF_ERROR(vm->ExecOk(Cat("mkdir -p /run/confidential-containers/initdata && echo ",
                                        Base64Encode(InitDataToml(policy)), " | base64 -d > ", kGuestInitDataPath))
                             .status());
  }
  COCO_RETURN_IF_ERROR(vm->StopAgent());
  COCO_RETURN_IF_ERROR(vm->SetAgentCommandLine(KbsAgentArgs(kbs, policy), {}));
  COCO_RETURN_IF_ERROR(vm->StartAgent());
  COCO_RETURN_IF_ERROR(vm->WaitAgentListening());
  return vm;
}

// The last "action" (create, open, format) the agent logged for `id`.
inline std::string LastActivationAction(GuestVm* vm, const std::string& id) {
  auto log = vm->AgentLog();
  if (!log.ok()) return "";
  std::string action;
  std::istringstream in(*log);
  for (std::string line; std::getline(in, line);) {
    if (line.find("volume.activated") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("volume", "") == id && j.contains("action")) {
      action = j["action"].get<std::string>();
    }
  }
  return action;
}

}  // namespace cocostorage::vmtest
