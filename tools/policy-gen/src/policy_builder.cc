#include "policy_builder.h"

#include <openssl/evp.h>

#include <set>

#include "cocostorage/common/strings.h"
#include "core/key_source.h"
#include "core/volume_spec.h"
#include "params.h"  // csi-driver: the plugin's own parameter, template and size rules

namespace cocostorage::policygen {
namespace {

using agent::policy::BlankDeviceRule;
using agent::policy::CreateRule;
using agent::policy::StoragePolicy;
using agent::policy::VolumeKind;
using agent::policy::VolumeRule;

// Must match csi-driver/src/driver.h: what CreateVolume / an inline publish
// make of a request, so the size bounds are the device's exact size.
constexpr int64_t kSizeGranularity = int64_t{1} << 20;
constexpr int64_t kDefaultVolumeBytes = int64_t{1} << 30;

Status Invalid(std::string_view what) { return absl::InvalidArgumentError(std::string(what)); }

std::string Sha256Hex8(std::string_view s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), md, &len, EVP_sha256(), nullptr);
  return HexEncode(std::string_view(reinterpret_cast<const char*>(md), 4));
}

// One volume of ours, before it becomes a rule.
struct Candidate {
  std::string volume;  // the pod's volume name
  std::string claim;   // the PVC's name (persistent identity), empty for inline
  std::string claim_namespace;
  const ClaimSpec* spec = nullptr;          // nullptr for CSI inline volumes
  const StorageClassSpec* klass = nullptr;  // nullptr for CSI inline volumes
  const PodVolume* pod_volume = nullptr;    // nullptr for StatefulSet claim templates
  bool generic_ephemeral = false;
  std::string describe;  // "volume data (PVC data-web-0, StorageClass fast)"
};

StatusOr<const Workload*> SelectWorkload(const K8sInputs& in, const GeneratorOptions& o) {
  std::vector<const Workload*> found;
  for (const Workload& w : in.workloads) {
    if (o.workload_name.empty() || w.name == o.workload_name) found.push_back(&w);
  }
  if (found.size() == 1) return found[0];
  if (found.empty()) {
    if (o.workload_name.empty())
      return Invalid("the input holds no Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet or Job");
    return Invalid(Cat("the input holds no workload named \"", o.workload_name, "\""));
  }
  std::vector<std::string> names;
  for (const Workload* w : found) names.push_back(Cat(w->kind, "/", w->name));
  return Invalid(Cat("the input holds several workloads (", Join(names, ", "),
                     "): pick one with --pod NAME (one policy per pod VM)"));
}

StatusOr<const StorageClassSpec*> FindClass(const K8sInputs& in, const ClaimSpec& c, std::string_view what) {
  if (!c.storage_class.has_value()) {
    std::vector<const StorageClassSpec*> defaults;
    for (const auto& s : in.classes) {
      if (s.is_default) defaults.push_back(&s);
    }
    if (defaults.size() == 1) return defaults[0];
    return Invalid(Cat(what, " has no storageClassName and the input holds ", defaults.empty() ? "no" : "more than one",
                       " default StorageClass: cannot tell whether the volume is ours (pass the StorageClass YAML)"));
  }
  if (c.storage_class->empty()) return static_cast<const StorageClassSpec*>(nullptr);  // static binding
  for (const auto& s : in.classes) {
    if (s.name == *c.storage_class) return &s;
  }
  return Invalid(Cat(what, " uses StorageClass \"", *c.storage_class,
                     "\", which is not in the input: cannot tell whether the volume is ours (pass its YAML)"));
}

std::string ResolvedNamespace(std::string_view own, const GeneratorOptions& o) {
  return own.empty() ? o.default_namespace : std::string(own);
}

// Device size the CSI plugin creates for this request, in bytes.
StatusOr<std::pair<uint64_t, uint64_t>> SizeBounds(const Candidate& c, std::vector<std::string>* warnings) {
  if (c.spec == nullptr) {  // CSI inline: the "size" attribute
    int64_t want = kDefaultVolumeBytes;
    const auto& attrs = c.pod_volume->csi_attributes;
    if (auto it = attrs.find("size"); it != attrs.end()) {
      auto s = csi::ParseInlineSize(it->second);
      if (!s.ok()) return Invalid(Cat(c.describe, ": ", s.status().message()));
      want = *s;
    }
    auto size = csi::ResolveCapacity(want, 0, kDefaultVolumeBytes, kSizeGranularity);
    if (!size.ok()) return Invalid(Cat(c.describe, ": ", size.status().message()));
    return std::make_pair(static_cast<uint64_t>(*size), static_cast<uint64_t>(*size));
  }
  int64_t required = 0, limit = 0;
  if (!c.spec->request.empty()) {
    auto r = csi::ParseQuantity(c.spec->request);
    if (!r.ok()) return Invalid(Cat(c.describe, ": resources.requests.storage: ", r.status().message()));
    required = *r;
  }
  if (!c.spec->limit.empty()) {
    auto l = csi::ParseQuantity(c.spec->limit);
    if (!l.ok()) return Invalid(Cat(c.describe, ": resources.limits.storage: ", l.status().message()));
    limit = *l;
  }
  auto size = csi::ResolveCapacity(required, limit, kDefaultVolumeBytes, kSizeGranularity);
  if (!size.ok()) return Invalid(Cat(c.describe, ": ", size.status().message()));
  // Expansion (offline, host-side) can only grow the device up to the claim's
  // limit; without a limit the policy pins today's size.
  const int64_t max = limit > *size ? limit / kSizeGranularity * kSizeGranularity : *size;
  if (limit == 0 && c.klass != nullptr && c.klass->allow_volume_expansion) {
    warnings->push_back(Cat(c.describe,
                            ": StorageClass allows expansion but the claim has no "
                            "resources.limits.storage; max_size is the current size, so an expanded "
                            "volume needs a new policy"));
  }
  return std::make_pair(static_cast<uint64_t>(*size), static_cast<uint64_t>(max));
}

StatusOr<agent::KeySource> ResolveKey(const Candidate& c, const csi::VolumeParams& params, const GeneratorOptions& o) {
  if (params.key_source == csi::KeySource::kEphemeral) return agent::KeySource::Ephemeral();
  std::map<std::string, std::string> meta;
  meta[std::string(csi::kPvcNameKey)] = c.claim;
  if (!c.claim_namespace.empty()) meta[std::string(csi::kPvcNamespaceKey)] = c.claim_namespace;
  if (auto it = o.pv_names.find(c.claim); it != o.pv_names.end()) meta[std::string(csi::kPvNameKey)] = it->second;
  const std::string& uri = params.kbs_resource_uri;
  // Say what to pass before the plugin's generic "missing metadata" message.
  if (uri.find("${pv.name}") != std::string::npos && !meta.count(std::string(csi::kPvNameKey))) {
    return Invalid(Cat(c.describe, ": kbsResourceUri \"", uri,
                       "\" uses ${pv.name}, which is only known once the claim is bound; pass --pv-name ", c.claim,
                       "=<PV name> (kubectl get pvc ", c.claim, " -o jsonpath='{.spec.volumeName}')"));
  }
  if (uri.find("${pvc.namespace}") != std::string::npos && c.claim_namespace.empty()) {
    return Invalid(Cat(c.describe, ": kbsResourceUri \"", uri,
                       "\" uses ${pvc.namespace} and the claim's namespace is not in the YAML; pass --namespace"));
  }
  auto resolved = csi::ResolveKbsResourceUri(uri, meta);
  if (!resolved.ok()) return Invalid(Cat(c.describe, ": ", resolved.status().message()));
  auto key = agent::KeySource::Kbs(*resolved);
  if (!key.ok()) return Invalid(Cat(c.describe, ": ", key.status().message()));
  return *key;
}

struct BuiltRule {
  VolumeRule rule;
  std::optional<RegoVolume> rego;
  std::string source;  // for collision messages
};

StatusOr<std::optional<BuiltRule>> BuildRule(const Candidate& c, const Workload& w, const GeneratorOptions& o,
                                             std::vector<std::string>* warnings) {
  // Parameters: the plugin's own parser, so whatever CreateVolume would
  // refuse is refused here with the same message.
  std::map<std::string, std::string> raw;
  if (c.klass != nullptr) {
    raw = c.klass->parameters;
  } else {
    raw = c.pod_volume->csi_attributes;
    if (raw.count("(nodePublishSecretRef)")) {
      return Invalid(Cat(c.describe, ": nodePublishSecretRef is not supported by ", o.driver_name));
    }
  }
  auto parsed = csi::ParseVolumeParams(raw, /*allow_size=*/c.klass == nullptr);
  if (!parsed.ok()) return Invalid(Cat(c.describe, ": ", parsed.status().message()));
  csi::VolumeParams params = *parsed;

  BuiltRule out;
  VolumeRule& r = out.rule;
  const bool persistent = params.key_source == csi::KeySource::kKbs;
  if (persistent && c.klass == nullptr) {
    return Invalid(Cat(c.describe, ": CSI inline volumes must use keySource=ephemeral (docs/csi.md)"));
  }
  if (persistent && c.generic_ephemeral) {
    return Invalid(Cat(c.describe,
                       ": a generic ephemeral volume's claim is deleted with its pod, so a KBS key "
                       "would protect nothing that outlives it; use a keySource=ephemeral StorageClass"));
  }
  r.kind = persistent ? VolumeKind::kPersistent : VolumeKind::kEphemeral;
  // A claim is the volume's identity (it outlives pods); inline and generic
  // ephemeral volumes have only the pod's volume name.
  r.id = SanitizeVolumeId(!c.claim.empty() && !c.generic_ephemeral ? c.claim : c.volume);
  out.source = c.describe;

  // How the containers use it.
  std::vector<const VolumeUse*> uses;
  for (const VolumeUse& u : w.uses) {
    if (u.volume == c.volume) uses.push_back(&u);
  }
  if (uses.empty()) {
    warnings->push_back(Cat(c.describe, ": no container mounts it; left out of the policy (the agent will refuse it)"));
    return std::optional<BuiltRule>();
  }
  const std::string mode = c.spec != nullptr ? c.spec->volume_mode : "Filesystem";
  if (mode != "Filesystem" && mode != "Block") {
    return Invalid(Cat(c.describe, ": volumeMode \"", mode, "\" is not Filesystem or Block"));
  }
  r.block_mode = mode == "Block";
  bool all_read_only = true;
  for (const VolumeUse* u : uses) {
    if (u->sub_path) {
      return Invalid(Cat(c.describe, ": container ", u->container,
                         " mounts it with subPath, which the generated Rego cannot bind to the storage"));
    }
    if (u->device != r.block_mode) {
      return Invalid(Cat(c.describe, ": container ", u->container, " uses it in ",
                         u->device ? "volumeDevices" : "volumeMounts", " but its volumeMode is ", mode));
    }
    if (u->path != uses[0]->path) {
      return Invalid(Cat(c.describe, ": mounted at several paths (", uses[0]->path, " in ", uses[0]->container, ", ",
                         u->path, " in ", u->container,
                         "); a policy rule binds a volume to one container_path: mount it at one path"));
    }
    all_read_only = all_read_only && u->read_only;
  }
  if (uses[0]->path.empty() || uses[0]->path[0] != '/') {
    return Invalid(Cat(c.describe, ": path \"", uses[0]->path, "\" is not absolute"));
  }
  r.container_path = uses[0]->path;
  r.read_only = all_read_only || (c.pod_volume != nullptr && c.pod_volume->read_only);
  if (c.spec != nullptr) {
    for (const auto& m : c.spec->access_modes) {
      if (m == "ReadOnlyMany" || m == "ReadWriteMany") {
        return Invalid(Cat(c.describe, ": access mode ", m, " is not served by ", o.driver_name,
                           " (a volume is one device in one VM)"));
      }
    }
  }

  auto integrity = agent::ParseIntegrityName(params.integrity);
  if (!integrity.ok()) return Invalid(Cat(c.describe, ": ", integrity.status().message()));
  r.integrity = {*integrity};

  COCO_ASSIGN_OR_RETURN(r.key, ResolveKey(c, params, o));
  if (persistent) r.create = o.create;
  COCO_ASSIGN_OR_RETURN(auto bounds, SizeBounds(c, warnings));
  r.min_size_bytes = bounds.first;
  r.max_size_bytes = bounds.second;

  std::string fs_type = params.fs_type;
  if (c.pod_volume != nullptr && !c.pod_volume->csi_fs_type.empty()) {
    if (!fs_type.empty() && fs_type != c.pod_volume->csi_fs_type) {
      return Invalid(
          Cat(c.describe, ": csi.fsType \"", c.pod_volume->csi_fs_type, "\" contradicts fsType \"", fs_type, "\""));
    }
    fs_type = c.pod_volume->csi_fs_type;
  }
  if (fs_type.empty()) fs_type = "ext4";

  if (r.block_mode) {
    // kata-agent's SecureMount always asks for a file system, so a raw block
    // volume can only reach the agent as a Kata storage it is handed directly.
    r.routes = {agent::Origin::kKataStorage};
    if (!params.mkfs_options.empty()) return Invalid(Cat(c.describe, ": block volumes take no mkfsOptions"));
    warnings->push_back(Cat(c.describe,
                            ": block mode: routed as kata-storage only; an unmodified kata-agent "
                            "cannot hand a raw block volume to the agent (no Rego rule is emitted)"));
    return std::optional<BuiltRule>(std::move(out));
  }

  // Filesystem volumes reach the agent over kata-agent's SecureMount, whose
  // request is fixed (reference doc): ext4, dataIntegrity true|false, and
  // its constant mkfs options. A policy asking for anything else would only
  // make the agent refuse the volume, so say it now.
  r.routes = {agent::Origin::kSecureMount};
  if (fs_type != "ext4") {
    return Invalid(Cat(c.describe, ": fsType ", fs_type,
                       " cannot be served over kata-agent's SecureMount (it always asks for ext4); use fsType ext4"));
  }
  if (*integrity != agent::IntegrityMode::kHmacSha256 && *integrity != agent::IntegrityMode::kNone) {
    return Invalid(Cat(c.describe, ": integrity ", params.integrity,
                       " cannot be requested over kata-agent's SecureMount (dataIntegrity=true|false means "
                       "hmac-sha256|none)"));
  }
  r.fs_type = fs_type;
  if (persistent) {
    r.mkfs_options = Split(params.mkfs_options, ' ');  // used once, at creation
  } else {
    if (!params.mkfs_options.empty()) {
      return Invalid(
          Cat(c.describe, ": mkfsOptions \"", params.mkfs_options,
              "\" never reach an ephemeral volume over SecureMount (kata-agent sends its constant options)"));
    }
    r.mkfs_options = KataSecureMountMkfsOptions();
  }
  if (c.klass != nullptr) {
    for (const auto& m : c.klass->mount_options) {
      auto st = csi::ValidateMountFlag(m);
      if (!st.ok()) return Invalid(Cat(c.describe, ": mountOptions: ", st.message()));
      r.mount_options.push_back(m);
    }
  }
  RegoVolume rv;
  rv.id = r.id;
  rv.fs_type = r.fs_type;
  rv.container_path = r.container_path;
  rv.read_only = r.read_only;
  rv.mount_options = r.mount_options;
  out.rego = std::move(rv);
  return std::optional<BuiltRule>(std::move(out));
}

}  // namespace

std::string SanitizeVolumeId(std::string_view name) {
  std::string id;
  for (char ch : name) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                    ch == '.' || ch == '-';
    id.push_back(ok ? ch : '-');
  }
  if (id.empty() ||
      !((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= 'A' && id[0] <= 'Z') || (id[0] >= '0' && id[0] <= '9'))) {
    id.insert(0, "v");
  }
  if (id.size() > 64) id = Cat(id.substr(0, 55), "-", Sha256Hex8(name));
  return id;
}

StatusOr<GeneratedPolicy> BuildStoragePolicy(const K8sInputs& inputs, const GeneratorOptions& o) {
  COCO_ASSIGN_OR_RETURN(const Workload* w, SelectWorkload(inputs, o));
  GeneratedPolicy out;
  out.fs_group = w->fs_group;
  const std::string ns = ResolvedNamespace(w->namespace_, o);

  // The pod's name: what a claim template is named after.
  std::string pod_name = w->name;
  if (w->kind == "StatefulSet") {
    const int64_t replicas = w->replicas.value_or(1);
    if (!o.ordinal.has_value() && replicas != 1 && !w->claim_templates.empty()) {
      return Invalid(Cat("StatefulSet ", w->name, " has ", replicas,
                         " replicas and claim templates: each replica has its own claims (and keys), so its own "
                         "policy; pass --ordinal N (one init-data per replica)"));
    }
    pod_name = Cat(w->name, "-", o.ordinal.value_or(0));
  } else if (o.ordinal.has_value()) {
    return Invalid("--ordinal applies to StatefulSets only");
  }
  out.policy.policy_version = o.policy_version;
  out.policy.workload = !o.workload_label.empty() ? o.workload_label : ns.empty() ? pod_name : Cat(ns, "/", pod_name);

  std::vector<Candidate> candidates;
  std::set<std::string> pod_volume_names;
  for (const PodVolume& v : w->volumes) {
    pod_volume_names.insert(v.name);
    Candidate c;
    c.volume = v.name;
    c.pod_volume = &v;
    switch (v.type) {
      case PodVolume::Type::kOther:
        continue;
      case PodVolume::Type::kCsiInline:
        if (v.csi_driver != o.driver_name) continue;
        c.describe = Cat("volume ", v.name, " (CSI inline)");
        break;
      case PodVolume::Type::kPvc: {
        const ClaimSpec* spec = nullptr;
        for (const ClaimSpec& cl : inputs.claims) {
          if (cl.name == v.claim_name && ResolvedNamespace(cl.namespace_, o) == ns) spec = &cl;
        }
        if (spec == nullptr) {
          return Invalid(Cat("volume ", v.name, ": PersistentVolumeClaim ", v.claim_name,
                             " is not in the input: cannot tell whether the volume is ours (pass its YAML)"));
        }
        c.claim = spec->name;
        c.claim_namespace = ns;
        c.spec = spec;
        c.describe = Cat("volume ", v.name, " (PVC ", spec->name, ")");
        break;
      }
      case PodVolume::Type::kGenericEphemeral:
        c.claim = Cat(pod_name, "-", v.name);  // what Kubernetes names the claim
        c.claim_namespace = ns;
        c.spec = &v.ephemeral_claim;
        c.generic_ephemeral = true;
        c.describe = Cat("volume ", v.name, " (generic ephemeral)");
        break;
    }
    if (c.spec != nullptr) {
      COCO_ASSIGN_OR_RETURN(c.klass, FindClass(inputs, *c.spec, c.describe));
      if (c.klass == nullptr) {
        out.warnings.push_back(Cat(c.describe,
                                   ": storageClassName \"\" (a pre-bound PV): cannot tell whether it is "
                                   "ours; left out of the policy"));
        continue;
      }
      if (c.klass->provisioner != o.driver_name) continue;
      c.describe = Cat(c.describe, ", StorageClass ", c.klass->name);
    }
    candidates.push_back(std::move(c));
  }
  for (const ClaimSpec& t : w->claim_templates) {
    if (pod_volume_names.count(t.name)) continue;  // the pod's own volume of that name wins
    Candidate c;
    c.volume = t.name;
    c.claim = Cat(t.name, "-", pod_name);
    c.claim_namespace = ns;
    c.spec = &t;
    c.describe = Cat("claim template ", t.name, " (PVC ", c.claim, ")");
    COCO_ASSIGN_OR_RETURN(c.klass, FindClass(inputs, t, c.describe));
    if (c.klass == nullptr || c.klass->provisioner != o.driver_name) continue;
    c.describe = Cat(c.describe, ", StorageClass ", c.klass->name);
    candidates.push_back(std::move(c));
  }

  std::map<std::string, std::string> ids;  // id -> source
  for (const Candidate& c : candidates) {
    COCO_ASSIGN_OR_RETURN(std::optional<BuiltRule> built, BuildRule(c, *w, o, &out.warnings));
    if (!built.has_value()) continue;
    auto [it, fresh] = ids.emplace(built->rule.id, built->source);
    if (!fresh) {
      return Invalid(Cat("volume id \"", built->rule.id, "\" of ", built->source, " collides with ", it->second,
                         "; rename one of them"));
    }
    if (built->rego.has_value()) out.rego_volumes.push_back(*built->rego);
    out.policy.volumes.push_back(std::move(built->rule));
  }
  if (out.policy.volumes.size() > agent::policy::kMaxVolumes) {
    return Invalid(Cat("the workload has ", out.policy.volumes.size(), " volumes of ours; a policy holds at most ",
                       agent::policy::kMaxVolumes));
  }

  size_t ephemeral = 0, persistent_sm = 0, creatable = 0;
  for (const VolumeRule& r : out.policy.volumes) {
    const bool sm = !r.routes.empty() && r.routes[0] == agent::Origin::kSecureMount;
    if (r.kind == VolumeKind::kEphemeral) {
      ++ephemeral;
    } else if (sm) {
      ++persistent_sm;
      if (r.create == CreateRule::kIfBlank) ++creatable;
    }
  }
  out.policy.max_ephemeral_volumes = static_cast<uint32_t>(ephemeral);

  if (o.blank_device == "deny") {
    out.policy.secure_mount_blank_device = BlankDeviceRule{};
    if (creatable > 0 && (ephemeral > 0 || creatable > 1)) {
      out.warnings.push_back(
          "a blank SecureMount device could become more than one volume, and secure_mount.blank_device is "
          "\"deny\": no persistent volume will be created over SecureMount (see --blank-device)");
    }
  } else if (o.blank_device == "ephemeral") {
    if (ephemeral == 0) return Invalid("--blank-device ephemeral: the policy has no ephemeral volume");
    out.policy.secure_mount_blank_device = BlankDeviceRule{BlankDeviceRule::Kind::kEphemeral, ""};
  } else {
    bool found = false;
    for (const VolumeRule& r : out.policy.volumes) {
      found =
          found || (r.id == o.blank_device && r.kind == VolumeKind::kPersistent && r.create == CreateRule::kIfBlank);
    }
    if (!found) {
      return Invalid(Cat("--blank-device ", o.blank_device,
                         ": not the id of a persistent volume with create = if-blank (see --create)"));
    }
    out.policy.secure_mount_blank_device = BlankDeviceRule{BlankDeviceRule::Kind::kVolume, o.blank_device};
  }

  if (persistent_sm >= 2 && !o.allow_permutation) {
    return Invalid(Cat("the workload has ", persistent_sm,
                       " persistent volumes routed over SecureMount: an unmodified kata-agent lets the host present "
                       "them at each other's paths (design R1: each still opens only as itself); pass "
                       "--allow-permutation to accept that"));
  }
  if (out.policy.volumes.empty()) {
    if (!o.allow_empty) {
      return Invalid(Cat(w->kind, " ", w->name, " has no volume of ", o.driver_name,
                         " (pass --allow-empty for a policy that admits no volume)"));
    }
    out.warnings.push_back(
        Cat(w->kind, " ", w->name, " has no volume of ", o.driver_name, ": the policy admits no volume"));
  }
  return out;
}

}  // namespace cocostorage::policygen
