// RBD images in an existing Ceph cluster as volume backing (issue 13). Only
// ciphertext ever reaches the cluster: the guest encrypts and authenticates
// every byte; the plugin creates, resizes, renames and removes images and
// never reads or writes their data.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "backend.h"
#include "cocostorage/common/status.h"

namespace cocostorage::csi {

struct RbdOptions {
  std::string mon_host;  // "127.0.0.1:6789" or "v2:10.0.0.1:3300,..."
  std::string pool = "rbd";
  std::string user = "admin";  // cephx id, without "client."
  std::string key;             // cephx secret (base64); held in memory only, never logged
  // Every librados/librbd call gives up after this (mon and OSD op timeouts,
  // client mount timeout): a dead cluster is UNAVAILABLE in seconds, not a hang.
  std::chrono::seconds timeout{10};
};

// Pure parts, tested without a cluster.
// Image of volume `id`: "coco-vol-<id>" (ids are [A-Za-z0-9._-], ≤ 128).
std::string RbdImageName(std::string_view id);
// The volume id of an image name, or "" when the image is not a volume of ours.
std::string RbdVolumeIdOf(std::string_view image);
// The name a quarantined volume's image gets ("coco-orphan-<unix time>-<id>"):
// no longer a volume (List skips it), its bytes kept for an operator.
std::string RbdOrphanName(std::string_view id, long long unix_time);
// BackingInfo::device of an image: "rbd:<pool>/<image>". A real node maps it
// with `rbd device map` before Kata hot-plugs it (docs/deploy.md).
std::string RbdDeviceRef(std::string_view pool, std::string_view image);
// librados/librbd return -errno; the message names the operation, never a key.
Status RbdStatus(int ret, std::string_view what);
// Free bytes of `pool` from the JSON of the monitor's "df" command.
StatusOr<int64_t> PoolMaxAvailFromDf(std::string_view df_json, std::string_view pool);
// Validates options before anything connects: INVALID_ARGUMENT naming the field.
Status ValidateRbdOptions(const RbdOptions& o);

// The cluster of a CSI request, in ceph-csi's conventions: StorageClass
// parameters "monitors" (comma-separated, "v2:10.0.0.1:3300,...") and "pool";
// the provisioner/node Secret (csi.storage.k8s.io/*-secret-name and
// -namespace in the StorageClass; kubelet and the external-provisioner put its
// data in the request's `secrets`) holds "userID" (without "client.") and
// "userKey". Other parameters are not looked at here. Errors name the missing
// or bad key, never a secret's value.
inline constexpr std::string_view kRbdMonitorsParam = "monitors";
inline constexpr std::string_view kRbdPoolParam = "pool";
inline constexpr std::string_view kRbdUserIdSecret = "userID";
inline constexpr std::string_view kRbdUserKeySecret = "userKey";
StatusOr<RbdOptions> RbdOptionsFromCsi(const std::map<std::string, std::string>& params,
                                       const std::map<std::string, std::string>& secrets);

// Connects lazily (first call) and reconnects after a call fails with a
// connection error.
StatusOr<VolumeBackendPtr> NewRbdBackend(RbdOptions options);

// The plugin's backend with --backend=rbd: the cluster is `monitors` (the
// plugin's), the pool the volume's parameter, the credentials the
// request's secrets, else `fallback` (the plugin's own Secret, mounted
// as --rbd-secret-dir: what GetCapacity, NodeGetVolumeStats and a request
// whose StorageClass names no secret use). ClusterWide; Scoped answers one
// NewRbdBackend per (monitors, pool, user, key), kept for reuse (at most
// kMaxRbdConnections; the oldest is dropped, in-flight calls keep theirs).
// Its own operations, unscoped, are FAILED_PRECONDITION (a caller bug),
// except Check (OK: a node's health does not hang on a remote cluster) and
// List (empty: nothing to reconcile from one node).
struct RbdCredentials {
  std::string user;  // without "client."
  std::string key;   // never logged
};
inline constexpr size_t kMaxRbdConnections = 16;
// `make` builds the backend of one (cluster, pool, credentials); tests pass a
// fake, the plugin NewRbdBackend.
using RbdBackendMaker = std::function<StatusOr<VolumeBackendPtr>(RbdOptions)>;
VolumeBackendPtr NewRbdClusterBackend(std::string monitors, std::optional<RbdCredentials> fallback,
                                      std::chrono::seconds timeout, RbdBackendMaker make = NewRbdBackend);
// The one way a call reaches the cluster: the plugin's `monitors` (never a
// recorded or host-given copy: monitors move, e.g. a Rook mon failover), the
// volume's pool, the request's `secrets` else `fallback`, and `timeout`.
// FAILED_PRECONDITION without credentials, INVALID_ARGUMENT for bad ones
// (naming the field, never a value).
StatusOr<RbdOptions> RbdClusterOptions(const std::string& monitors, const VolumeParams& params,
                                       const std::map<std::string, std::string>& secrets,
                                       const std::optional<RbdCredentials>& fallback, std::chrono::seconds timeout);
// Reads the files "userID" and "userKey" of a mounted Secret (trailing
// newline stripped). Errors name the file, never its content.
StatusOr<RbdCredentials> ReadRbdSecretDir(const std::string& dir);

}  // namespace cocostorage::csi
