// Pure core of the policy generator: Kubernetes objects -> the storage policy
// (guest-agent/src/policy/storage_policy.h) for one workload, plus what the
// Rego additions need. Every decision is documented in
// docs/policy-generator.md; an input the generator cannot turn into an exact
// rule is INVALID_ARGUMENT (exit code 2), never a guess.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "k8s_input.h"
#include "policy/storage_policy.h"

namespace cocostorage::policygen {

// The CSI driver whose volumes are ours (docs/csi.md, --driver-name default).
inline constexpr std::string_view kDefaultDriverName = "csi.cocostorage.dev";

// kata-agent's constant mkfs options for block emptyDir / SecureMount
// (BLOCK_EMPTYDIR_EXT4_MKFS_OPTS, ../shared/reference/coco-guest-integration.md):
// what every SecureMount request carries, so an ephemeral rule must list exactly these.
inline const std::vector<std::string>& KataSecureMountMkfsOptions() {
  static const std::vector<std::string> k = {"-O", "^has_journal", "-m", "0", "-i", "163840", "-I", "128"};
  return k;
}

struct GeneratorOptions {
  std::string driver_name = std::string(kDefaultDriverName);
  std::string workload_name;                    // --pod: selects the workload when the input holds several
  std::string default_namespace;                // --namespace: for objects without metadata.namespace
  std::optional<int64_t> ordinal;               // --ordinal: the StatefulSet replica the policy is for
  std::map<std::string, std::string> pv_names;  // --pv-name CLAIM=PV, for ${pv.name}
  uint32_t policy_version = 1;
  std::string workload_label;  // --workload; empty: "<namespace>/<pod>"
  agent::policy::CreateRule create = agent::policy::CreateRule::kNever;
  // --blank-device: "deny" (default), "ephemeral" or a persistent rule's id.
  std::string blank_device = "deny";
  bool allow_permutation = false;  // --allow-permutation (design §2.4, R1)
  bool allow_empty = false;        // --allow-empty: a pod with none of our volumes
};

// What the Rego additions pin for one volume beyond the policy rule.
struct RegoVolume {
  std::string id;
  std::string fs_type;
  std::string container_path;
  bool read_only = false;
  std::vector<std::string> mount_options;
};

struct GeneratedPolicy {
  agent::policy::StoragePolicy policy;
  std::vector<RegoVolume> rego_volumes;  // filesystem volumes on the secure-mount route
  std::optional<int64_t> fs_group;       // pod securityContext.fsGroup (kata-agent's Storage.fs_group)
  std::vector<std::string> warnings;     // printed on stderr, never fatal
};

StatusOr<GeneratedPolicy> BuildStoragePolicy(const K8sInputs& inputs, const GeneratorOptions& options);

// Volume ids: [A-Za-z0-9][A-Za-z0-9_.-]{0,63}. Other characters become '-';
// a longer name keeps 55 characters, '-' and 8 hex digits of its SHA-256, so
// the id stays stable and distinct names stay (almost surely) distinct;
// BuildStoragePolicy refuses the collisions that remain.
std::string SanitizeVolumeId(std::string_view name);

}  // namespace cocostorage::policygen
