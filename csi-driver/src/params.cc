#include "params.h"

#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <functional>
#include <vector>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::csi {
namespace {

constexpr char kKeySource[] = "keySource";
constexpr char kKbsResourceUri[] = "kbsResourceUri";
constexpr char kFsType[] = "fsType";
constexpr char kIntegrity[] = "integrity";
constexpr char kMkfsOptions[] = "mkfsOptions";
constexpr char kRbdMonitors[] = "monitors";  // = kRbdMonitorsParam (rbd_backend.h)
constexpr char kRbdPool[] = "pool";          // = kRbdPoolParam
constexpr size_t kMaxKbsSegment = 128;

bool IsSegmentHead(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// Why `uri` is not kbs:///<repo>/<type>/<tag>; empty when it is.
std::string KbsUriProblem(std::string_view uri) {
  constexpr std::string_view kScheme = "kbs:///";
  if (uri.substr(0, kScheme.size()) != kScheme) return "must start with kbs:///";
  std::string_view rest = uri.substr(kScheme.size());
  int segments = 0;
  size_t pos = 0;
  while (true) {
    size_t slash = rest.find('/', pos);
    std::string_view seg = rest.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    if (seg.empty()) return "empty path segment";
    if (seg.size() > kMaxKbsSegment) return Cat("path segment longer than ", kMaxKbsSegment, " characters");
    if (!IsSegmentHead(seg[0])) return "a segment must start with [a-zA-Z0-9_-]";
    for (char c : seg) {
      if (!IsSegmentHead(c) && c != '.') return Cat("character '", Echo(std::string_view(&c, 1)), "' not allowed");
    }
    ++segments;
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  if (segments != 3) return Cat("want 3 path segments, got ", segments);
  return "";
}

// ---- kbsResourceUri templates

struct Placeholder {
  std::string_view name;  // between "${" and "}"
  std::string_view key;   // CreateVolume parameter that carries the value
  bool dns_label;         // namespace: DNS-1123 label; else DNS-1123 subdomain
};
constexpr Placeholder kPlaceholders[] = {
    {"pvc.namespace", kPvcNamespaceKey, true},
    {"pvc.name", kPvcNameKey, false},
    {"pv.name", kPvNameKey, false},
};
constexpr char kKnownPlaceholders[] = "${pvc.namespace}, ${pvc.name}, ${pv.name}";

// Splits `uri` into literal runs (ph == nullptr) and placeholders, in order.
Status ScanTemplate(std::string_view uri, const std::function<Status(std::string_view, const Placeholder*)>& emit) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(Cat("parameter kbsResourceUri template \"", Echo(uri), "\": ", why,
                                          " (placeholders: ", kKnownPlaceholders, "; there is no escape for '$')"));
  };
  size_t pos = 0;
  while (pos < uri.size()) {
    size_t dollar = uri.find('$', pos);
    if (dollar == std::string_view::npos) return emit(uri.substr(pos), nullptr);
    if (dollar > pos) COCO_RETURN_IF_ERROR(emit(uri.substr(pos, dollar - pos), nullptr));
    if (dollar + 1 >= uri.size() || uri[dollar + 1] != '{') {
      return bad(Cat("'$' at offset ", dollar, " does not start a placeholder \"${...}\""));
    }
    size_t close = uri.find('}', dollar + 2);
    if (close == std::string_view::npos) return bad(Cat("unterminated placeholder at offset ", dollar, ": no '}'"));
    std::string_view name = uri.substr(dollar + 2, close - dollar - 2);
    if (name.find_first_of("${") != std::string_view::npos) {
      return bad(Cat("nested placeholder at offset ", dollar, " is not supported"));
    }
    const Placeholder* ph = nullptr;
    for (const auto& p : kPlaceholders) {
      if (p.name == name) ph = &p;
    }
    if (!ph) return bad(Cat("unknown placeholder \"${", Echo(name), "}\""));
    COCO_RETURN_IF_ERROR(emit({}, ph));
    pos = close + 1;
  }
  return OkStatus();
}

bool IsDnsLabel(std::string_view s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(s.front()) || !alnum(s.back())) return false;
  for (char c : s) {
    if (!alnum(c) && c != '-') return false;
  }
  return true;
}

bool IsDnsSubdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (const std::string& label : Split(s, '.', /*skip_empty=*/false)) {
    if (!IsDnsLabel(label, 63)) return false;
  }
  return true;
}

// A placeholder value is a Kubernetes object name, so it can never bring a
// '/', a leading '.', ".." or any character outside the KBS grammar.
Status CheckPlaceholderValue(const Placeholder& ph, std::string_view value) {
  if (ph.dns_label ? IsDnsLabel(value, 63) : IsDnsSubdomain(value)) return OkStatus();
  return absl::InvalidArgumentError(
      Cat("parameter ", ph.key, " \"", Echo(value), "\" (for ${", ph.name, "} in kbsResourceUri) is not a Kubernetes ",
          ph.dns_label ? "namespace name: want a DNS-1123 label (at most 63 of a-z, 0-9, '-', starting and ending "
                         "with a letter or digit)"
                       : "object name: want a DNS-1123 subdomain (at most 253 of a-z, 0-9, '-', '.', each "
                         "dot-separated part starting and ending with a letter or digit)"));
}

}  // namespace

std::string Echo(std::string_view input) {
  std::string out;
  const size_t n = input.size() > kEchoMax ? kEchoMax : input.size();
  out.reserve(n + 3);
  for (size_t i = 0; i < n; ++i) {
    const char c = input[i];
    out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  if (input.size() > kEchoMax) out.append("...");
  return out;
}

bool VolumeParams::HasUriTemplate() const { return IsKbsResourceUriTemplate(kbs_resource_uri); }

std::map<std::string, std::string> VolumeParams::ToMap() const {
  std::map<std::string, std::string> out;
  out[kKeySource] = key_source == KeySource::kKbs ? "kbs" : "ephemeral";
  if (key_source == KeySource::kKbs) out[kKbsResourceUri] = kbs_resource_uri;
  if (!fs_type.empty()) out[kFsType] = fs_type;
  out[kIntegrity] = integrity;
  if (!mkfs_options.empty()) out[kMkfsOptions] = mkfs_options;
  if (!rbd_monitors.empty()) out[kRbdMonitors] = rbd_monitors;
  if (!rbd_pool.empty()) out[kRbdPool] = rbd_pool;
  return out;
}

StatusOr<VolumeParams> ParseVolumeParams(const std::map<std::string, std::string>& params, bool allow_size) {
  VolumeParams p;
  bool have_uri = false;
  for (const auto& [key, value] : params) {
    if (key.rfind(kReservedKeyPrefix, 0) == 0) continue;
    if (key == kKeySource) {
      if (value == "ephemeral") {
        p.key_source = KeySource::kEphemeral;
      } else if (value == "kbs") {
        p.key_source = KeySource::kKbs;
      } else {
        return absl::InvalidArgumentError(
            Cat("parameter keySource: want \"ephemeral\" or \"kbs\", got \"", Echo(value), "\""));
      }
    } else if (key == kKbsResourceUri) {
      COCO_RETURN_IF_ERROR(IsKbsResourceUriTemplate(value) ? ValidateKbsResourceUriTemplate(value)
                                                           : ValidateKbsResourceUri(value));
      p.kbs_resource_uri = value;
      have_uri = true;
    } else if (key == kFsType) {
      COCO_RETURN_IF_ERROR(ValidateFsType(value));
      p.fs_type = value;
    } else if (key == kIntegrity) {
      COCO_RETURN_IF_ERROR(ValidateIntegrity(value));
      p.integrity = value;
    } else if (key == kMkfsOptions) {
      COCO_RETURN_IF_ERROR(ValidateMkfsOptions(value));
      p.mkfs_options = Join(Split(value, ' '), " ");
    } else if (key == kRbdMonitors) {
      COCO_RETURN_IF_ERROR(ValidateRbdMonitors(value));
      p.rbd_monitors = value;
    } else if (key == kRbdPool) {
      COCO_RETURN_IF_ERROR(ValidateRbdPool(value));
      p.rbd_pool = value;
    } else if (allow_size && key == "size") {
      continue;
    } else {
      return absl::InvalidArgumentError(Cat("unknown parameter \"", Echo(key), "\""));
    }
  }
  if (p.key_source == KeySource::kKbs && !have_uri) {
    return absl::InvalidArgumentError("parameter kbsResourceUri is required when keySource is \"kbs\"");
  }
  if (p.key_source != KeySource::kKbs && have_uri) {
    return absl::InvalidArgumentError("parameter kbsResourceUri is only allowed with keySource \"kbs\"");
  }
  if (!p.rbd_monitors.empty() && p.rbd_pool.empty()) {
    return absl::InvalidArgumentError("parameter monitors (Ceph RBD) needs the parameter pool");
  }
  return p;
}

Status ValidateRbdMonitors(std::string_view monitors) {
  // Addresses as `ceph mon dump` prints them: [v2:|v1:]host[:port][/nonce],
  // comma-separated, IPv6 in brackets. Nothing that could be a second option.
  auto allowed = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == ':' || c == ',' || c == '[' || c == ']' ||
           c == '/' || c == '-' || c == '_';
  };
  if (monitors.empty() || monitors.size() > 1024 || !std::all_of(monitors.begin(), monitors.end(), allowed)) {
    return absl::InvalidArgumentError(
        Cat("parameter monitors \"", Echo(monitors),
            "\" is not a Ceph monitor list (want comma-separated [v2:]host:port, as `ceph mon dump` prints)"));
  }
  return OkStatus();
}

Status ValidateRbdPool(std::string_view pool) {
  // Stricter than Ceph: the pool is part of device references (rbd:<pool>/..)
  // and of `rbd device map` arguments.
  auto allowed = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'; };
  if (pool.empty() || pool.size() > 128 || pool.front() == '-' || pool.front() == '.' ||
      !std::all_of(pool.begin(), pool.end(), allowed)) {
    return absl::InvalidArgumentError(Cat("parameter pool \"", Echo(pool),
                                          "\" is not a pool name this plugin accepts (1..128 of A-Z a-z 0-9 . - _, "
                                          "not starting with - or .)"));
  }
  return OkStatus();
}

Status ValidateKbsResourceUri(std::string_view uri) {
  std::string why = KbsUriProblem(uri);
  if (why.empty()) return OkStatus();
  return absl::InvalidArgumentError(
      Cat("parameter kbsResourceUri \"", Echo(uri), "\" is malformed (want kbs:///<repo>/<type>/<tag>): ", why));
}

bool IsKbsResourceUriTemplate(std::string_view uri) { return uri.find('$') != std::string_view::npos; }

Status ValidateKbsResourceUriTemplate(std::string_view uri) {
  std::string dummy;
  COCO_RETURN_IF_ERROR(ScanTemplate(uri, [&](std::string_view literal, const Placeholder* ph) {
    dummy.append(ph ? std::string_view("x") : literal);
    return OkStatus();
  }));
  // Every placeholder stands for a non-empty [a-z0-9.-] name; "x" is one.
  // What fails with it fails with any value: the literal text is wrong.
  if (std::string why = KbsUriProblem(dummy); !why.empty()) {
    return absl::InvalidArgumentError(Cat("parameter kbsResourceUri template \"", Echo(uri),
                                          "\" can never resolve to a KBS resource URI (want "
                                          "kbs:///<repo>/<type>/<tag>, a placeholder filling a whole segment or "
                                          "part of one): ",
                                          why));
  }
  return OkStatus();
}

StatusOr<std::string> ResolveKbsResourceUri(std::string_view uri,
                                            const std::map<std::string, std::string>& request_params) {
  if (!IsKbsResourceUriTemplate(uri)) {
    COCO_RETURN_IF_ERROR(ValidateKbsResourceUri(uri));
    return std::string(uri);
  }
  COCO_RETURN_IF_ERROR(ValidateKbsResourceUriTemplate(uri));
  std::string out;
  std::vector<std::string> missing;
  Status bad_value = OkStatus();
  COCO_RETURN_IF_ERROR(ScanTemplate(uri, [&](std::string_view literal, const Placeholder* ph) {
    if (!ph) {
      out.append(literal);
      return OkStatus();
    }
    auto it = request_params.find(std::string(ph->key));
    if (it == request_params.end()) {
      const std::string what = Cat("${", ph->name, "} (parameter ", ph->key, ")");
      if (std::find(missing.begin(), missing.end(), what) == missing.end()) missing.push_back(what);
      return OkStatus();
    }
    if (bad_value.ok()) bad_value = CheckPlaceholderValue(*ph, it->second);
    out.append(it->second);
    return OkStatus();
  }));
  if (!missing.empty()) {
    return absl::InvalidArgumentError(
        Cat("parameter kbsResourceUri template \"", Echo(uri), "\" needs ", Join(missing, ", "),
            ", which CreateVolume did not receive: run the csi-provisioner sidecar with --extra-create-metadata "
            "(Helm chart: node.provisioner.extraCreateMetadata=true), or use a fixed kbs:///<repo>/<type>/<tag>"));
  }
  COCO_RETURN_IF_ERROR(bad_value);
  if (std::string why = KbsUriProblem(out); !why.empty()) {
    return absl::InvalidArgumentError(Cat("parameter kbsResourceUri template \"", Echo(uri), "\" resolves to \"",
                                          Echo(out), "\", which is not a valid KBS resource URI: ", why));
  }
  return out;
}

Status ResolveVolumeParams(VolumeParams* params, const std::map<std::string, std::string>& request_params) {
  if (params->key_source != KeySource::kKbs || !params->HasUriTemplate()) return OkStatus();
  COCO_ASSIGN_OR_RETURN(params->kbs_resource_uri, ResolveKbsResourceUri(params->kbs_resource_uri, request_params));
  return OkStatus();
}

Status ValidateFsType(std::string_view fs_type) {
  if (fs_type == "ext4" || fs_type == "xfs") return OkStatus();
  return absl::InvalidArgumentError(Cat("fsType \"", Echo(fs_type), "\" is not supported (want ext4 or xfs)"));
}

Status ValidateIntegrity(std::string_view integrity) {
  if (integrity == "hmac-sha256" || integrity == "none" || integrity == "aegis128" || integrity == "aes-gcm") {
    return OkStatus();
  }
  return absl::InvalidArgumentError(Cat("parameter integrity \"", Echo(integrity),
                                        "\" is not supported (want hmac-sha256, none, aegis128 or aes-gcm)"));
}

Status ValidateMkfsOptions(std::string_view options) {
  if (options.size() > 1024) return absl::InvalidArgumentError("parameter mkfsOptions is longer than 1024 bytes");
  for (char c : options) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              std::string_view("-_=,.:/^+ ").find(c) != std::string_view::npos;
    if (!ok) {
      return absl::InvalidArgumentError(Cat("parameter mkfsOptions contains a character that is not allowed: '",
                                            c >= 0x20 && c < 0x7f ? std::string(1, c) : std::string("?"), "'"));
    }
  }
  return OkStatus();
}

StatusOr<int64_t> ParseQuantity(std::string_view text) {
  std::string_view s = TrimWhitespace(text);
  size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
  if (digits == 0) return absl::InvalidArgumentError(Cat("size \"", Echo(text), "\" is not a quantity"));
  unsigned long long n = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + digits, n);
  if (ec != std::errc() || ptr != s.data() + digits) {
    return absl::InvalidArgumentError(Cat("size \"", Echo(text), "\" is out of range"));
  }
  std::string_view suffix = s.substr(digits);
  static const std::pair<std::string_view, unsigned long long> kUnits[] = {
      {"", 1ULL},           {"k", 1000ULL},          {"K", 1000ULL},     {"M", 1000000ULL},
      {"G", 1000000000ULL}, {"T", 1000000000000ULL}, {"Ki", 1ULL << 10}, {"Mi", 1ULL << 20},
      {"Gi", 1ULL << 30},   {"Ti", 1ULL << 40}};
  for (const auto& [name, mult] : kUnits) {
    if (suffix != name) continue;
    if (n > static_cast<unsigned long long>(INT64_MAX) / mult) {
      return absl::InvalidArgumentError(Cat("size \"", Echo(text), "\" is out of range"));
    }
    return static_cast<int64_t>(n * mult);
  }
  return absl::InvalidArgumentError(Cat("size \"", Echo(text), "\" has an unknown unit"));
}

StatusOr<int64_t> ParseInlineSize(std::string_view text) {
  COCO_ASSIGN_OR_RETURN(int64_t bytes, ParseQuantity(text));
  if (bytes <= 0) return absl::InvalidArgumentError(Cat("size \"", Echo(text), "\" must be greater than 0"));
  if (bytes > kMaxInlineBytes) {
    return absl::InvalidArgumentError(Cat("size \"", Echo(text), "\" exceeds ", kMaxInlineBytes, " bytes"));
  }
  return bytes;
}

StatusOr<int64_t> ResolveCapacity(int64_t required, int64_t limit, int64_t default_bytes, int64_t granularity) {
  if (required < 0 || limit < 0) return absl::InvalidArgumentError("capacity_range values must not be negative");
  if (limit > 0 && required > limit) {
    return absl::OutOfRangeError(Cat("capacity_range: required_bytes ", required, " > limit_bytes ", limit));
  }
  int64_t want = required > 0 ? required : default_bytes;
  if (required == 0 && limit > 0 && want > limit) want = limit;
  if (want > INT64_MAX - granularity) return absl::OutOfRangeError(Cat("capacity ", want, " is too large"));
  int64_t size = (want + granularity - 1) / granularity * granularity;
  if (size == 0) size = granularity;
  if (limit > 0 && size > limit) {
    return absl::OutOfRangeError(
        Cat("capacity_range [", required, ", ", limit, "] holds no multiple of ", granularity, " bytes"));
  }
  return size;
}

bool CapacityFits(int64_t size, int64_t required, int64_t limit) {
  return size >= required && (limit <= 0 || size <= limit);
}

Status ValidateVolumeId(std::string_view id) {
  if (id.empty()) return absl::InvalidArgumentError("volume_id is required");
  if (id.size() > 128 || id[0] == '.') return absl::NotFoundError(Cat("volume \"", Echo(id), "\" does not exist"));
  for (char c : id) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return absl::NotFoundError(Cat("volume \"", Echo(id), "\" does not exist"));
  }
  return OkStatus();
}

std::string VolumeIdForName(std::string_view name) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(name.data()), name.size(), digest);
  return Cat("cv-", HexEncode(std::string_view(reinterpret_cast<const char*>(digest), 20)));
}

std::string RbdVolumeIdForName(std::string_view pool, std::string_view name) {
  // "cv-<40 hex>" of the name, behind the pool: one pool's volume ids never
  // collide with another's, and DeleteVolume finds the image from the id.
  return Cat("rbd-", pool, "-", VolumeIdForName(name).substr(3));
}

std::string RbdPoolOfVolumeId(std::string_view id) {
  constexpr size_t kHex = 40;
  if (id.size() <= 4 + 1 + kHex || id.substr(0, 4) != "rbd-" || id[id.size() - kHex - 1] != '-') return "";
  for (char c : id.substr(id.size() - kHex)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return "";
  }
  std::string_view pool = id.substr(4, id.size() - 4 - kHex - 1);
  if (pool.size() > kMaxRbdPoolInVolumeId || !ValidateRbdPool(pool).ok()) return "";
  return std::string(pool);
}

Status ValidateRequestPath(std::string_view path, std::string_view field) {
  if (path.empty()) return absl::InvalidArgumentError(Cat(field, " is required"));
  auto norm = NormalizeAbsolutePath(path);
  if (!norm.ok()) return absl::InvalidArgumentError(Cat(field, ": ", Echo(std::string(norm.status().message()))));
  if (*norm != path) {
    return absl::InvalidArgumentError(
        Cat(field, " \"", Echo(path), "\" is not normalised (want \"", Echo(*norm), "\")"));
  }
  if (*norm == "/") return absl::InvalidArgumentError(Cat(field, " must not be \"/\""));
  return OkStatus();
}

StatusOr<std::string> KataVolumeDirName(std::string_view target_path) {
  std::string name = Base64UrlEncode(target_path);
  if (name.size() > 255) {
    return absl::InvalidArgumentError(
        Cat("target_path is too long for a Kata direct volume (", target_path.size(), " bytes, at most 189)"));
  }
  return name;
}

Status ValidateFsGroup(std::string_view group) {
  unsigned long long v = 0;
  // 0..2^31-1: the guest refuses larger gids (and so does Kubernetes for
  // fsGroup); accepting them here would only fail later, inside the VM.
  if (group.empty() || group.size() > 10 || !ParseUint64(group, &v) || v > 0x7fffffffULL ||
      group.find_first_not_of("0123456789") != std::string_view::npos) {
    return absl::InvalidArgumentError(
        Cat("volume_mount_group \"", Echo(group), "\" is not a decimal group id in 0..2147483647"));
  }
  return OkStatus();
}

Status ValidateMountFlag(std::string_view flag) {
  if (flag.empty() || flag.size() > 256) return absl::InvalidArgumentError("mount flag is empty or too long");
  for (char c : flag) {
    if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\'' || c == '\\') {
      return absl::InvalidArgumentError(
          Cat("mount flag \"", Echo(flag), "\" contains a character that is not allowed"));
    }
  }
  return OkStatus();
}

}  // namespace cocostorage::csi
