#include "policy/matcher.h"

#include <algorithm>
#include <optional>

#include "cocostorage/common/strings.h"
#include "core/text.h"

namespace cocostorage::agent::policy {
namespace {

struct Refusal {
  std::string rule;
  std::string detail;
};

std::string RuleName(const VolumeRule& r, const char* field) { return Cat("volume[", r.id, "].", field); }

std::string IntegrityList(const std::vector<IntegrityMode>& modes) {
  std::vector<std::string> names;
  for (IntegrityMode m : modes) names.push_back(IntegrityName(m));
  return Join(names, ", ");
}

std::string Words(const std::vector<std::string>& words) { return words.empty() ? "(none)" : Join(words, " "); }

// Whether `rule` admits `req`; on success `out` is the request as the rule
// shapes it (the rule's defaults, its read-only).
std::optional<Refusal> CheckRule(const VolumeRule& rule, const ActivationRequest& req, ActivationRequest* out) {
  const KeySource& key = req.key ? *req.key : KeySource::Ephemeral();
  // kata-agent forwards a persistent volume exactly like an ephemeral one:
  // which it is, the device decides (RouteSecureMount), not the request.
  const bool secure_mount_candidate = req.origin == Origin::kSecureMount && rule.kind == VolumeKind::kPersistent;
  if (!secure_mount_candidate && key.ephemeral() != (rule.kind == VolumeKind::kEphemeral)) {
    return Refusal{RuleName(rule, "kind"), Cat("request is for an ", key.ephemeral() ? "ephemeral" : "KBS-keyed",
                                               " volume; the rule declares a ", VolumeKindName(rule.kind), " one")};
  }
  if (!key.ephemeral() && key != rule.key) {
    return Refusal{RuleName(rule, "key"),
                   Cat("request names key ", Quoted(key.ToString()), "; the policy's key is ", rule.key.ToString())};
  }
  if (req.block_mode != rule.block_mode) {
    return Refusal{RuleName(rule, "mode"),
                   Cat("request asks for a ", req.block_mode ? "block" : "filesystem", " volume; the rule declares ",
                       rule.block_mode ? "block" : "filesystem")};
  }
  if (req.fs_type != rule.fs_type) {
    return Refusal{RuleName(rule, "fs_type"),
                   Cat("request asks for ", Quoted(req.fs_type, 32), "; the rule declares ", rule.fs_type)};
  }
  const IntegrityMode integrity = req.integrity.value_or(rule.integrity.front());
  if (std::find(rule.integrity.begin(), rule.integrity.end(), integrity) == rule.integrity.end()) {
    return Refusal{RuleName(rule, "integrity"), Cat("request asks for \"", IntegrityName(integrity),
                                                    "\"; the policy allows ", IntegrityList(rule.integrity))};
  }
  // Whole word lists, not a subset: "-E" and "root_owner=0:0" are harmless
  // alone and not together.
  // kata-agent's mkfs words are its constants for scratch space (they drop
  // the ext4 journal): a persistent volume is made with the owner's.
  if (!secure_mount_candidate && !req.mkfs_options.empty() && req.mkfs_options != rule.mkfs_options) {
    return Refusal{RuleName(rule, "mkfs_options"), Cat("request's mkfs options ", Quoted(Words(req.mkfs_options)),
                                                       " are not the policy's ", Quoted(Words(rule.mkfs_options)))};
  }
  for (const auto& opt : req.mount_options) {
    if (std::find(rule.mount_options.begin(), rule.mount_options.end(), opt) == rule.mount_options.end()) {
      return Refusal{RuleName(rule, "mount_options"), Cat("mount option ", Quoted(opt, 64),
                                                          " is not allowed (policy: ", Words(rule.mount_options), ")")};
    }
  }
  *out = req;
  out->key = key;
  out->integrity = integrity;
  if (out->mkfs_options.empty() || secure_mount_candidate) out->mkfs_options = rule.mkfs_options;
  out->read_only = req.read_only || rule.read_only;
  out->create_if_blank = rule.kind == VolumeKind::kPersistent ? rule.create == CreateRule::kIfBlank : true;
  out->full_blank_check = rule.kind == VolumeKind::kPersistent && rule.blank_check == BlankCheck::kFull;
  return std::nullopt;
}

std::string SizeRange(const VolumeRule& r) {
  return Cat(FormatSize(r.min_size_bytes), "-", FormatSize(r.max_size_bytes));
}

}  // namespace

Status Denied(const StoragePolicy& policy, const std::string& rule, const std::string& detail) {
  return absl::PermissionDeniedError(Cat("storage policy v", policy.policy_version, ", rule ", rule, ": ", detail));
}

StatusOr<ActivationRequest> ApplyPolicy(const ActivationRequest& request, const StoragePolicy& policy) {
  std::vector<const VolumeRule*> candidates;
  for (const auto& rule : policy.volumes) {
    if (std::find(rule.routes.begin(), rule.routes.end(), request.origin) != rule.routes.end()) {
      candidates.push_back(&rule);
    }
  }
  if (candidates.empty()) {
    return Denied(policy, "match.no_rule", Cat("no volume rule allows the ", OriginName(request.origin), " route"));
  }
  // A request that names a rule (our API's volume id) is judged by that rule
  // alone: it never falls through to another rule that happens to fit.
  for (const VolumeRule* rule : candidates) {
    if (rule->id == request.volume_id) {
      candidates = {rule};
      break;
    }
  }
  std::optional<ActivationRequest> admitted;
  std::vector<std::string> refusals;
  std::vector<std::string> admitting;
  std::optional<Refusal> only_refusal;
  std::vector<std::string> persistent;
  for (const VolumeRule* rule : candidates) {
    ActivationRequest shaped;
    if (auto refusal = CheckRule(*rule, request, &shaped)) {
      refusals.push_back(Cat(refusal->rule, ": ", refusal->detail));
      only_refusal = std::move(refusal);
      continue;
    }
    if (request.origin == Origin::kSecureMount && rule->kind == VolumeKind::kPersistent) {
      persistent.push_back(rule->id);
      continue;
    }
    // Rules that admit the request but would shape it differently (another
    // default integrity, other mkfs options) cannot share one volume: the
    // first rule decides, later ones must agree to be candidates too.
    if (!admitted) {
      admitted = std::move(shaped);
      admitting.push_back(rule->id);
    } else if (shaped.integrity == admitted->integrity && shaped.mkfs_options == admitted->mkfs_options &&
               shaped.read_only == admitted->read_only) {
      admitting.push_back(rule->id);
    }
  }
  if (!admitted && !persistent.empty()) {
    // Only persistent rules fit: the request stays as kata-agent sent it
    // until the device says which volume it is.
    admitted = request;
  }
  if (!admitted) {
    if (candidates.size() == 1) return Denied(policy, only_refusal->rule, only_refusal->detail);
    return Denied(policy, "match.no_rule",
                  Cat("no volume rule admits this ", OriginName(request.origin), " request (",
                      Quoted(Join(refusals, "; "), 480), ")"));
  }
  admitted->policy_rules = std::move(admitting);
  admitted->persistent_candidates = std::move(persistent);
  return *admitted;
}

StatusOr<std::string> RouteSecureMount(const StoragePolicy& policy, const VolumeSpec& spec, const DeviceFacts& facts,
                                       const std::vector<VolumeSpec>& active) {
  auto is_candidate = [&](const std::string& id) {
    return std::find(spec.persistent_candidates.begin(), spec.persistent_candidates.end(), id) !=
           spec.persistent_candidates.end();
  };
  if (facts.kind == DeviceFacts::Kind::kOurs) {
    if (is_candidate(facts.volume_id)) return facts.volume_id;
    return absl::FailedPreconditionError(Cat("foreign_volume: the device holds persistent volume ",
                                             Quoted(facts.volume_id, 70), ", which no rule of storage policy v",
                                             policy.policy_version, " admits for this request"));
  }
  const bool ephemeral_ok = !spec.policy_rules.empty();
  if (facts.kind != DeviceFacts::Kind::kBlank) {
    // Not provably blank: at most an ephemeral volume (whose own check
    // allows what an earlier ephemeral volume left), never a persistent one.
    if (ephemeral_ok) return std::string();
    return absl::FailedPreconditionError(
        Cat("not_blank: the device ", facts.detail, "; it holds no persistent volume of this policy and is not blank"));
  }
  std::vector<const VolumeRule*> creatable;
  std::vector<const VolumeRule*> never;
  for (const auto& id : spec.persistent_candidates) {
    const VolumeRule* rule = policy.Find(id);
    if (rule == nullptr) continue;
    const bool already = std::any_of(active.begin(), active.end(), [&](const VolumeSpec& v) {
      return v.id != spec.id && v.persistent() && v.PvId() == id;
    });
    if (already) continue;  // a blank disk is not the volume that is active elsewhere
    (rule->create == CreateRule::kIfBlank ? creatable : never).push_back(rule);
  }
  if (creatable.empty()) {
    if (ephemeral_ok) return std::string();
    if (!never.empty()) {
      return Denied(policy, RuleName(*never.front(), "create"),
                    "the device is blank and the policy does not allow creating this volume (create = never)");
    }
    return Denied(policy, "secure_mount.blank_device", "the device is blank and every persistent volume is active");
  }
  if (creatable.size() == 1 && !ephemeral_ok) return creatable.front()->id;
  // Blank, and more than one thing it could become.
  const BlankDeviceRule& r = policy.secure_mount_blank_device;
  if (r.kind == BlankDeviceRule::Kind::kEphemeral && ephemeral_ok) return std::string();
  if (r.kind == BlankDeviceRule::Kind::kVolume) {
    for (const VolumeRule* rule : creatable) {
      if (rule->id == r.volume_id) return rule->id;
    }
  }
  std::vector<std::string> options;
  if (ephemeral_ok) options.push_back("an ephemeral volume");
  for (const VolumeRule* rule : creatable) options.push_back(Cat("persistent volume ", rule->id));
  return Denied(policy, "secure_mount.blank_device",
                Cat("a blank device could become ", Join(options, " or "),
                    "; the policy's [secure_mount] blank_device does not decide"));
}

VolumeSpec PersistentSpecFromRule(const VolumeSpec& requested, const VolumeRule& rule) {
  VolumeSpec s = requested;
  s.key = rule.key;
  s.persistent_id = rule.id;
  s.create_if_blank = rule.create == CreateRule::kIfBlank;
  s.full_blank_check = rule.blank_check == BlankCheck::kFull;
  s.integrity = rule.integrity.front();
  s.mkfs_options = rule.mkfs_options;
  s.read_only = requested.read_only || rule.read_only;
  s.policy_rules = {rule.id};
  s.persistent_candidates.clear();
  return s;
}

StatusOr<std::string> CheckClaim(const StoragePolicy& policy, const VolumeSpec& spec, uint64_t device_bytes,
                                 const std::vector<VolumeSpec>& active) {
  std::vector<const VolumeRule*> rules;
  for (const auto& id : spec.policy_rules) {
    const VolumeRule* rule = policy.Find(id);
    if (rule == nullptr) return Denied(policy, "match.no_rule", Cat("rule ", Quoted(id, 70), " is not in the policy"));
    rules.push_back(rule);
  }
  if (rules.empty()) return Denied(policy, "match.no_rule", "the request matched no rule");
  const VolumeRule* fitting = nullptr;
  for (const VolumeRule* rule : rules) {
    if (device_bytes >= rule->min_size_bytes && device_bytes <= rule->max_size_bytes) {
      fitting = rule;
      break;
    }
  }
  if (fitting == nullptr) {
    std::vector<std::string> ranges;
    for (const VolumeRule* rule : rules) ranges.push_back(Cat(rule->id, " ", SizeRange(*rule)));
    return Denied(policy, rules.size() == 1 ? RuleName(*rules.front(), "size") : std::string("match.size"),
                  Cat("device has ", FormatSize(device_bytes), "; the policy requires ", Join(ranges, ", ")));
  }
  if (fitting->kind == VolumeKind::kEphemeral) {
    std::vector<std::string> ephemeral;
    for (const VolumeSpec& other : active) {
      if (other.id != spec.id && other.key.ephemeral() && !other.policy_rules.empty()) ephemeral.push_back(other.id);
    }
    if (ephemeral.size() >= policy.max_ephemeral_volumes) {
      return Denied(policy, "limits.max_ephemeral_volumes",
                    Cat(ephemeral.size(), " ephemeral volume(s) already active, the policy allows ",
                        policy.max_ephemeral_volumes, " (", Quoted(Join(ephemeral, ", "), 200), ")"));
    }
  }
  return fitting->id;
}

}  // namespace cocostorage::agent::policy
