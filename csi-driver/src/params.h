// Pure request logic of the CSI plugin: StorageClass parameters, capacity
// ranges, identifiers and paths. No I/O here, so all of it is unit tested.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "cocostorage/common/base64.h"  // Base64UrlEncode, Kata's directory naming
#include "cocostorage/common/status.h"

namespace cocostorage::csi {

// Prefix of the keys the Kubernetes sidecars add to parameters and volume
// contexts (fstype, pod info, ephemeral marker...). Never an error.
inline constexpr std::string_view kReservedKeyPrefix = "csi.storage.k8s.io/";

// What the external-provisioner adds to CreateVolume parameters when it runs
// with --extra-create-metadata (reserved keys, otherwise ignored).
inline constexpr std::string_view kPvcNameKey = "csi.storage.k8s.io/pvc/name";
inline constexpr std::string_view kPvcNamespaceKey = "csi.storage.k8s.io/pvc/namespace";
inline constexpr std::string_view kPvNameKey = "csi.storage.k8s.io/pv/name";

enum class KeySource { kEphemeral, kKbs };

// What a StorageClass (or an inline volume's attributes) asks for. Every field
// is validated; nothing here is secret (a KBS resource URI is a name).
struct VolumeParams {
  KeySource key_source = KeySource::kEphemeral;
  // Set iff key_source == kKbs. As parsed from a StorageClass it may be a
  // template (HasUriTemplate); CreateVolume resolves it, so a volume's record
  // and context always hold the concrete URI.
  std::string kbs_resource_uri;
  std::string fs_type;                    // "ext4" | "xfs"; empty = not given
  std::string integrity = "hmac-sha256";  // hmac-sha256 | none | aegis128 | aes-gcm
  std::string mkfs_options;               // space-separated, may be empty
  // RBD backend only: the Ceph cluster's monitors and the pool the image
  // lives in, in ceph-csi's parameter names "monitors" and "pool". A
  // StorageClass gives the pool and may give the monitors (they must then be
  // the plugin's, --rbd-monitors); CreateVolume records both and puts them
  // in the volume context, so a stage on any node finds the image.
  std::string rbd_monitors;
  std::string rbd_pool;

  // kbs_resource_uri is a template (holds a placeholder) still to resolve.
  bool HasUriTemplate() const;
  bool IsRbd() const { return !rbd_pool.empty(); }
  // Canonical map (used as volume_context and for persistence).
  std::map<std::string, std::string> ToMap() const;
  bool operator==(const VolumeParams&) const = default;
};

// What an error message may echo of request input (ids, names, paths,
// parameter keys and values): at most kEchoMax bytes, then "..."; bytes
// outside printable ASCII become '?'. Enough for any path kubelet makes, but a
// caller cannot make us log or return megabytes, or control characters.
inline constexpr size_t kEchoMax = 192;
std::string Echo(std::string_view input);

// Parses StorageClass parameters. Unknown keys (other than the reserved
// prefix) are INVALID_ARGUMENT naming the key. With `allow_size`, the key
// "size" (inline ephemeral volume attribute) is accepted and skipped. A
// kbsResourceUri template is checked (ValidateKbsResourceUriTemplate) but not
// resolved: see ResolveVolumeParams.
StatusOr<VolumeParams> ParseVolumeParams(const std::map<std::string, std::string>& params, bool allow_size = false);

// kbs:///<repo>/<type>/<tag>, each segment [a-zA-Z0-9_-][a-zA-Z0-9_.-]*, at
// most 128 characters.
Status ValidateKbsResourceUri(std::string_view uri);

// kbsResourceUri templates: one key per volume. A template is a KBS resource
// URI whose segments may hold placeholders, each filling a whole segment or
// part of one:
//   ${pvc.namespace}  the claim's namespace  (parameter csi.storage.k8s.io/pvc/namespace)
//   ${pvc.name}       the claim's name       (parameter csi.storage.k8s.io/pvc/name)
//   ${pv.name}        the volume's PV name   (parameter csi.storage.k8s.io/pv/name)
// e.g. kbs:///${pvc.namespace}/volume-keys/${pvc.name}. There is no escape:
// '$' is not a KBS URI character, so every '$' must open a placeholder.
bool IsKbsResourceUriTemplate(std::string_view uri);  // holds a '$'
// Syntax only (no metadata needed): known placeholders, all terminated, not
// nested, and the literal text around them a valid KBS URI shape (scheme,
// 3 segments, allowed characters). INVALID_ARGUMENT otherwise.
Status ValidateKbsResourceUriTemplate(std::string_view uri);
// Pure: the concrete URI for `uri` given CreateVolume's parameters (where the
// external-provisioner puts the PVC/PV metadata). A URI without placeholders
// is returned as it is (after validation). INVALID_ARGUMENT for a bad
// template, missing metadata (names every missing key), a value that is not
// a Kubernetes name (namespace: DNS-1123 label; names: DNS-1123 subdomain,
// so never a '/', uppercase, "..", or a leading '.'), or a result that is not
// a valid KBS resource URI (e.g. a segment longer than 128 characters).
StatusOr<std::string> ResolveKbsResourceUri(std::string_view uri,
                                            const std::map<std::string, std::string>& request_params);
// Resolves params->kbs_resource_uri in place when it is a template.
Status ResolveVolumeParams(VolumeParams* params, const std::map<std::string, std::string>& request_params);
Status ValidateFsType(std::string_view fs_type);
Status ValidateRbdMonitors(std::string_view monitors);
Status ValidateRbdPool(std::string_view pool);
Status ValidateIntegrity(std::string_view integrity);
// Space-separated mkfs options: printable ASCII, no shell or quote characters.
Status ValidateMkfsOptions(std::string_view options);

// Parses a Kubernetes-style quantity: "1073741824", "512Mi", "10Gi", "1G", "1Ti".
StatusOr<int64_t> ParseQuantity(std::string_view text);

// The "size" attribute of an inline ephemeral volume: a quantity in
// 1..kMaxInlineBytes, else INVALID_ARGUMENT ("0" would otherwise silently
// mean the 1 GiB default).
inline constexpr int64_t kMaxInlineBytes = int64_t{1} << 50;  // 1 PiB
StatusOr<int64_t> ParseInlineSize(std::string_view text);

// Chooses the size of a new volume from a CSI CapacityRange (0 = unset):
// required rounded up to `granularity`, or `default_bytes` when unset, capped
// by limit. INVALID_ARGUMENT for negative values, OUT_OF_RANGE when no size
// that is a multiple of `granularity` fits.
StatusOr<int64_t> ResolveCapacity(int64_t required, int64_t limit, int64_t default_bytes, int64_t granularity);
// True when an existing volume of `size` satisfies the range.
bool CapacityFits(int64_t size, int64_t required, int64_t limit);

// Volume ids are file names in our directories: [A-Za-z0-9._-]{1,128}, not
// starting with '.'. (Ids we mint and kubelet's inline "csi-<hex>" ids pass.)
Status ValidateVolumeId(std::string_view id);
// Deterministic id for a CreateVolume name: "cv-" + 40 hex digits of SHA-256.
std::string VolumeIdForName(std::string_view name);
// The id of an RBD volume: "rbd-<pool>-<the same 40 hex digits>", so that any
// plugin of the cluster finds the image of a DeleteVolume from the id alone
// (DeleteVolume carries no parameters). Pools in ids are at most
// kMaxRbdPoolInVolumeId characters (ids are at most 128).
inline constexpr size_t kMaxRbdPoolInVolumeId = 80;
std::string RbdVolumeIdForName(std::string_view pool, std::string_view name);
// The pool of an id RbdVolumeIdForName made, "" for any other id.
std::string RbdPoolOfVolumeId(std::string_view id);

// A path from a request (target, staging, volume path): absolute, already
// normalised (no ".", "..", "//", trailing "/"), not "/", at most 4096 bytes.
// `field` names the request field in the error.
Status ValidateRequestPath(std::string_view path, std::string_view field);

// Directory name Kata uses for `target_path`; INVALID_ARGUMENT if the encoded
// name would exceed NAME_MAX (255).
StatusOr<std::string> KataVolumeDirName(std::string_view target_path);

// Decimal gid for fsGroup / volume_mount_group.
Status ValidateFsGroup(std::string_view group);
// Mount flags go to the guest: non-empty printable ASCII without ',' or spaces.
Status ValidateMountFlag(std::string_view flag);

}  // namespace cocostorage::csi
