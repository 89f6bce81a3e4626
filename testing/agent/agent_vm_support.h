// Shared helpers for tests that drive the guest agent inside the VM harness.
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent_client.h"
#include "backing_file.h"
#include "cocostorage/common/status.h"
#include "cocostorage/storage/v1/agent.grpc.pb.h"
#include "guest_vm.h"

namespace cocostorage::vmtest {

namespace pb = cocostorage::storage::v1;

inline constexpr char kStorageRoot[] = "/run/kata-containers/sandbox/storage";

// A sparse backing file on the host, removed on destruction.
class SparseImage {
 public:
  SparseImage(const std::string& dir, const std::string& name, uint64_t bytes);
  ~SparseImage();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string MakeTempDir(const std::string& prefix);

// The agent's retrying client (guest-agent/client).
using agent::AgentClient;
using agent::RetryPolicy;

pb::ActivateVolumeRequest FsRequest(const std::string& id, const std::string& pci_path, const std::string& fs_type);
pb::ActivateVolumeRequest BlockRequest(const std::string& id, const std::string& pci_path);

// kata-agent's SecureMount for the storage at guest PCI path `pci_like`:
// the mount point it passes (<storage root>/<base64url(source)>) and the
// volume id the agent derives from it ("sm-" + unpadded base64url).
std::string SecureMountPoint(const std::string& pci_like);
std::string SecureMountVolumeId(const std::string& pci_like);

// The init-data document kata-agent leaves in the guest, carrying `policy`
// as [data]."cocostorage.toml", and the SHA-256 hex a TEE would hold of it.
std::string InitDataToml(const std::string& policy);
std::string Sha256Hex(const std::string& bytes);

// MAJ:MIN of a guest disk (/dev/vdX), what kata-agent's SecureMount names.
StatusOr<std::string> GuestDevNumber(GuestVm* vm, const std::string& dev_path);

// The last `bytes` of the guest agent's log, headed, for a failing test's output.
std::string AgentLogTail(GuestVm* vm, size_t bytes = 6000);

// Tracks how much of the guest kernel log has been checked, so that every
// scenario is judged on its own lines.
class KernelLogCursor {
 public:
  explicit KernelLogCursor(GuestVm* vm) : vm_(vm) {}
  // Integrity / I/O error lines since the previous call.
  StatusOr<std::vector<std::string>> NewErrors();

 private:
  GuestVm* vm_;
};

}  // namespace cocostorage::vmtest
