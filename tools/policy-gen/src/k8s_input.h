// The Kubernetes objects the policy generator reads (docs/policy-generator.md):
// the workload's pod spec (a Pod, or the pod template of a Deployment,
// StatefulSet, DaemonSet, ReplicaSet or Job), PersistentVolumeClaims and
// StorageClasses. Only the fields the generator needs, as plain values, so the
// policy logic (policy_builder.h) is tested without YAML.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cocostorage/common/status.h"

namespace cocostorage::policygen {

struct ClaimSpec {
  std::string name;                          // metadata.name (empty in a generic ephemeral template)
  std::string namespace_;                    // metadata.namespace, empty when absent
  std::optional<std::string> storage_class;  // spec.storageClassName; nullopt: the default class
  std::string volume_mode = "Filesystem";    // spec.volumeMode
  std::vector<std::string> access_modes;
  std::string request;  // spec.resources.requests.storage, empty when absent
  std::string limit;    // spec.resources.limits.storage, empty when absent
  std::string origin;   // "file.yaml, document 2" for messages
};

struct StorageClassSpec {
  std::string name;
  std::string provisioner;
  std::map<std::string, std::string> parameters;
  std::vector<std::string> mount_options;
  bool allow_volume_expansion = false;
  bool is_default = false;  // storageclass.kubernetes.io/is-default-class: "true"
  std::string origin;
};

struct PodVolume {
  enum class Type { kPvc, kCsiInline, kGenericEphemeral, kOther };
  std::string name;
  Type type = Type::kOther;
  std::string other_type;                             // kOther: the volume source's key ("emptyDir", "configMap", ...)
  std::string claim_name;                             // kPvc
  bool read_only = false;                             // persistentVolumeClaim.readOnly / csi.readOnly
  std::string csi_driver;                             // kCsiInline
  std::map<std::string, std::string> csi_attributes;  // kCsiInline: volumeAttributes
  std::string csi_fs_type;                            // kCsiInline: csi.fsType
  ClaimSpec ephemeral_claim;                          // kGenericEphemeral
};

// One use of a pod volume by a container: volumeMounts (filesystem) or
// volumeDevices (block).
struct VolumeUse {
  std::string container;
  std::string volume;
  std::string path;  // mountPath / devicePath
  bool device = false;
  bool read_only = false;
  bool sub_path = false;  // subPath or subPathExpr set
};

struct Workload {
  std::string kind;  // Pod, Deployment, StatefulSet, ...
  std::string name;
  std::string namespace_;
  std::optional<int64_t> replicas;  // StatefulSet/Deployment spec.replicas
  std::optional<int64_t> fs_group;  // pod securityContext.fsGroup
  std::vector<PodVolume> volumes;
  std::vector<VolumeUse> uses;             // containers and initContainers, in document order
  std::vector<ClaimSpec> claim_templates;  // StatefulSet volumeClaimTemplates
  std::string origin;
};

struct K8sInputs {
  std::vector<Workload> workloads;
  std::vector<ClaimSpec> claims;
  std::vector<StorageClassSpec> classes;
};

// Parses one YAML stream (several documents, "kind: List" items too) and
// appends what it holds to `out`. Kinds the generator does not use (Service,
// ConfigMap, ...) are skipped. INVALID_ARGUMENT naming `source_name` and the
// document for malformed YAML or mistyped fields. Never throws.
Status ParseK8sYaml(std::string_view yaml_text, std::string_view source_name, K8sInputs* out);

}  // namespace cocostorage::policygen
