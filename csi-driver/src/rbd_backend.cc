#include "rbd_backend.h"

#include <openssl/sha.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <type_traits>
#include <vector>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::csi {
namespace {

constexpr std::string_view kVolumePrefix = "coco-vol-";
constexpr std::string_view kOrphanPrefix = "coco-orphan-";

// One cluster handle and one I/O context on the pool; librados and librbd are
// thread-safe, so concurrent calls for different volumes share them.
class Connection {
 public:
  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() {
    if (io_ != nullptr) rados_ioctx_destroy(io_);
    if (cluster_ != nullptr) rados_shutdown(cluster_);
  }

  static StatusOr<std::shared_ptr<Connection>> Open(const RbdOptions& o) {
    auto c = std::make_shared<Connection>();
    int r = rados_create2(&c->cluster_, "ceph", Cat("client.", o.user).c_str(), 0);
    if (r < 0) {
      c->cluster_ = nullptr;
      return RbdStatus(r, "creating the Ceph client");
    }
    const std::string timeout = std::to_string(o.timeout.count());
    // Nothing from /etc/ceph or the environment: the plugin's options are the
    // whole configuration, and the key never touches a file.
    const std::pair<const char*, std::string> settings[] = {
        {"mon_host", o.mon_host},
        {"key", o.key},
        {"keyring", ""},
        {"client_mount_timeout", timeout},
        {"rados_mon_op_timeout", timeout},
        {"rados_osd_op_timeout", timeout},
        {"log_to_stderr", "false"},
        {"err_to_stderr", "false"},
        {"log_file", ""},
    };
    for (const auto& [name, value] : settings) {
      if (int rc = rados_conf_set(c->cluster_, name, value.c_str()); rc < 0) {
        return RbdStatus(rc, Cat("setting Ceph option ", name));
      }
    }
    if (r = rados_connect(c->cluster_); r < 0) {
      return RbdStatus(r, Cat("connecting to the Ceph monitors at ", o.mon_host, " as client.", o.user));
    }
    if (r = rados_ioctx_create(c->cluster_, o.pool.c_str(), &c->io_); r < 0) {
      c->io_ = nullptr;
      return RbdStatus(r, Cat("opening pool ", o.pool));
    }
    return c;
  }

  rados_t cluster() const { return cluster_; }
  rados_ioctx_t io() const { return io_; }

 private:
  rados_t cluster_ = nullptr;
  rados_ioctx_t io_ = nullptr;
};

class Image {
 public:
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;
  ~Image() { rbd_close(image_); }

  static StatusOr<std::unique_ptr<Image>> Open(rados_ioctx_t io, const std::string& name, bool read_only) {
    rbd_image_t image = nullptr;
    int r =
        read_only ? rbd_open_read_only(io, name.c_str(), &image, nullptr) : rbd_open(io, name.c_str(), &image, nullptr);
    if (r < 0) return RbdStatus(r, Cat("opening image ", name));
    return std::unique_ptr<Image>(new Image(image));
  }

  StatusOr<uint64_t> Size() const {
    uint64_t size = 0;
    if (int r = rbd_get_size(image_, &size); r < 0) return RbdStatus(r, "reading the image size");
    return size;
  }

  // Bytes of the image's objects that exist (thin provisioning), from the
  // object map when the image has fast-diff (the cluster default).
  StatusOr<uint64_t> AllocatedBytes(uint64_t size) const {
    uint64_t allocated = 0;
    auto add = [](uint64_t, size_t len, int exists, void* arg) -> int {
      if (exists != 0) *static_cast<uint64_t*>(arg) += len;
      return 0;
    };
    if (int r = rbd_diff_iterate2(image_, nullptr, 0, size, 1, 1, add, &allocated); r < 0) {
      return RbdStatus(r, "reading the image's allocation");
    }
    return allocated;
  }

  Status Grow(uint64_t size) {
    if (int r = rbd_resize2(image_, size, /*allow_shrink=*/false, nullptr, nullptr); r < 0) {
      return RbdStatus(r, Cat("resizing the image to ", size, " bytes"));
    }
    return OkStatus();
  }

 private:
  explicit Image(rbd_image_t image) : image_(image) {}
  rbd_image_t image_;
};

class RbdBackend final : public VolumeBackend {
 public:
  explicit RbdBackend(RbdOptions o) : o_(std::move(o)) {}

  std::string Name() const override { return "rbd"; }

  StatusOr<BackingInfo> Create(const std::string& id, int64_t size_bytes) override {
    COCO_ASSIGN_OR_RETURN(auto conn, Conn());
    const std::string name = RbdImageName(id);
    rbd_image_options_t opts;
    rbd_image_options_create(&opts);  // the cluster's default features and object size
    int r = rbd_create4(conn->io(), name.c_str(), static_cast<uint64_t>(size_bytes), opts);
    rbd_image_options_destroy(opts);
    if (r < 0 && r != -EEXIST) return Checked(RbdStatus(r, Cat("creating image ", name, " in pool ", o_.pool)));
    // EEXIST: a retried or crash-interrupted create; at least `size_bytes`.
    COCO_ASSIGN_OR_RETURN(auto image, Checked(Image::Open(conn->io(), name, false)));
    COCO_ASSIGN_OR_RETURN(uint64_t size, image->Size());
    if (size < static_cast<uint64_t>(size_bytes)) COCO_RETURN_IF_ERROR(image->Grow(static_cast<uint64_t>(size_bytes)));
    return Info(*image, name);
  }

  Status Delete(const std::string& id) override {
    COCO_ASSIGN_OR_RETURN(auto conn, Conn());
    const std::string name = RbdImageName(id);
    int r = rbd_remove(conn->io(), name.c_str());
    if (r == -ENOENT) return OkStatus();
    if (r == -EBUSY) {
      return absl::FailedPreconditionError(
          Cat("image ", name, " still has watchers (mapped on a node or attached to a VM): not removed"));
    }
    return Checked(RbdStatus(r, Cat("removing image ", name)));
  }

  StatusOr<BackingInfo> Expand(const std::string& id, int64_t size_bytes) override {
    COCO_ASSIGN_OR_RETURN(auto conn, Conn());
    const std::string name = RbdImageName(id);
    COCO_ASSIGN_OR_RETURN(auto image, Checked(Image::Open(conn->io(), name, false)));
    COCO_ASSIGN_OR_RETURN(uint64_t size, image->Size());
    if (size < static_cast<uint64_t>(size_bytes)) COCO_RETURN_IF_ERROR(image->Grow(static_cast<uint64_t>(size_bytes)));
    return Info(*image, name);
  }

  StatusOr<BackingInfo> Stat(const std::string& id) const override {
    COCO_ASSIGN_OR_RETURN(auto conn, Conn());
    const std::string name = RbdImageName(id);
    COCO_ASSIGN_OR_RETURN(auto image, Checked(Image::Open(conn->io(), name, true)));
    return Info(*image, name);
  }

  Status Quarantine(const std::string& id) override {
    COCO_ASSIGN_OR_RETURN(auto conn, Conn());
    const std::string from = RbdImageName(id);
    const std::string to = RbdOrphanName(id, static_cast<long long>(time(nullptr)));
    int r = rbd_rename(conn->io(), from.c_str(), to.c_str());
    if (r == -ENOENT) return OkStatus();
    return Checked(RbdStatus(r, Cat("renaming image ", from, " to ", to)));
  }

  StatusOr<std::vector<std::string>> List() const override {
    COCO_ASSIGN_OR_RETURN(auto conn, Conn());
    std::vector<rbd_image_spec_t> specs(64);
    size_t count = specs.size();
    int r;
    while ((r = rbd_list2(conn->io(), specs.data(), &count)) == -ERANGE) specs.resize(count);
    if (r < 0) return Checked(RbdStatus(r, Cat("listing images in pool ", o_.pool)));
    std::vector<std::string> ids;
    for (size_t i = 0; i < count; ++i) {
      std::string id = RbdVolumeIdOf(specs[i].name);
      if (!id.empty()) ids.push_back(std::move(id));
    }
    rbd_image_spec_list_cleanup(specs.data(), count);
    return ids;
  }

  StatusOr<int64_t> FreeBytes() const override {
    COCO_ASSIGN_OR_RETURN(auto conn, Conn());
    const char* cmd[] = {R"({"prefix": "df", "format": "json"})"};
    char* out = nullptr;
    size_t out_len = 0;
    char* why = nullptr;
    size_t why_len = 0;
    int r = rados_mon_command(conn->cluster(), cmd, 1, "", 0, &out, &out_len, &why, &why_len);
    std::string json = out != nullptr ? std::string(out, out_len) : std::string();
    std::string reason = why != nullptr ? std::string(why, why_len) : std::string();
    rados_buffer_free(out);
    rados_buffer_free(why);
    if (r < 0) return Checked(RbdStatus(r, Cat("asking the monitors for free space (", reason, ")")));
    return PoolMaxAvailFromDf(json, o_.pool);
  }

  Status Check() const override {
    COCO_ASSIGN_OR_RETURN(auto conn, Conn());
    // An OSD of the pool answers: a missing object is what a healthy one says.
    uint64_t size = 0;
    time_t mtime = 0;
    int r = rados_stat(conn->io(), "coco-health-probe", &size, &mtime);
    if (r == -ENOENT || r == 0) return OkStatus();
    return Checked(RbdStatus(r, Cat("reaching an OSD of pool ", o_.pool)));
  }

 private:
  StatusOr<std::shared_ptr<Connection>> Conn() const {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn_ == nullptr) {
      COCO_ASSIGN_OR_RETURN(conn_, Connection::Open(o_));
    }
    return conn_;
  }

  // A connection that stopped answering is dropped; the next call reconnects.
  template <typename T>
  T Checked(T result) const {
    Status s;
    if constexpr (std::is_same_v<T, Status>) {
      s = result;
    } else {
      s = result.status();
    }
    if (s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded) {
      std::lock_guard<std::mutex> lock(mu_);
      conn_.reset();
    }
    return result;
  }

  StatusOr<BackingInfo> Info(const Image& image, const std::string& name) const {
    BackingInfo info;
    COCO_ASSIGN_OR_RETURN(uint64_t size, image.Size());
    COCO_ASSIGN_OR_RETURN(uint64_t allocated, image.AllocatedBytes(size));
    info.device = RbdDeviceRef(o_.pool, name);
    info.size_bytes = static_cast<int64_t>(size);
    info.allocated_bytes = static_cast<int64_t>(allocated);
    return info;
  }

  const RbdOptions o_;
  mutable std::mutex mu_;
  mutable std::shared_ptr<Connection> conn_;
};

// Keyed by everything that makes a connection different; the key is hashed so
// that the map never holds it twice and a dump of the map shows no secret.
std::string ConnectionKey(const RbdOptions& o) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(o.key.data()), o.key.size(), digest);
  return Cat(o.mon_host, "|", o.pool, "|", o.user, "|",
             HexEncode(std::string_view(reinterpret_cast<const char*>(digest), sizeof(digest))));
}

class RbdClusterBackend final : public VolumeBackend {
 public:
  RbdClusterBackend(std::string monitors, std::optional<RbdCredentials> fallback, std::chrono::seconds timeout,
                    RbdBackendMaker make)
      : monitors_(std::move(monitors)), fallback_(std::move(fallback)), timeout_(timeout), make_(std::move(make)) {}

  std::string Name() const override { return "rbd"; }
  bool ClusterWide() const override { return true; }

  StatusOr<VolumeBackendRef> Scoped(const VolumeParams& params,
                                    const std::map<std::string, std::string>& secrets) override {
    if (!params.IsRbd()) {
      return absl::InvalidArgumentError(
          "this plugin runs the Ceph RBD backend: the StorageClass needs the parameter pool");
    }
    COCO_ASSIGN_OR_RETURN(RbdOptions o, RbdClusterOptions(monitors_, params, secrets, fallback_, timeout_));
    const std::string key = ConnectionKey(o);
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [k, b] : cache_) {
      if (k == key) return b;
    }
    COCO_ASSIGN_OR_RETURN(VolumeBackendPtr made, make_(std::move(o)));
    VolumeBackendRef b(std::move(made));
    if (cache_.size() >= kMaxRbdConnections) cache_.erase(cache_.begin());
    cache_.emplace_back(key, b);
    return b;
  }

  StatusOr<BackingInfo> Create(const std::string&, int64_t) override { return Unscoped(); }
  Status Delete(const std::string&) override { return Unscoped(); }
  StatusOr<BackingInfo> Expand(const std::string&, int64_t) override { return Unscoped(); }
  StatusOr<BackingInfo> Stat(const std::string&) const override { return Unscoped(); }
  Status Quarantine(const std::string&) override { return Unscoped(); }
  StatusOr<std::vector<std::string>> List() const override { return std::vector<std::string>(); }
  StatusOr<int64_t> FreeBytes() const override { return Unscoped(); }
  Status Check() const override { return OkStatus(); }

 private:
  static Status Unscoped() {
    return absl::FailedPreconditionError("internal: an RBD operation without its volume's cluster (Scoped)");
  }

  const std::string monitors_;
  const std::optional<RbdCredentials> fallback_;
  const std::chrono::seconds timeout_;
  const RbdBackendMaker make_;
  std::mutex mu_;
  std::vector<std::pair<std::string, VolumeBackendRef>> cache_;  // oldest first
};

bool IsVolumeIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

}  // namespace

std::string RbdImageName(std::string_view id) { return Cat(kVolumePrefix, id); }

std::string RbdVolumeIdOf(std::string_view image) {
  if (image.size() <= kVolumePrefix.size() || image.substr(0, kVolumePrefix.size()) != kVolumePrefix) return "";
  std::string_view id = image.substr(kVolumePrefix.size());
  for (char c : id) {
    if (!IsVolumeIdChar(c)) return "";
  }
  return std::string(id);
}

std::string RbdOrphanName(std::string_view id, long long unix_time) { return Cat(kOrphanPrefix, unix_time, "-", id); }

std::string RbdDeviceRef(std::string_view pool, std::string_view image) { return Cat("rbd:", pool, "/", image); }

Status RbdStatus(int ret, std::string_view what) {
  if (ret >= 0) return OkStatus();
  const int err = -ret;
  switch (err) {
    case ETIMEDOUT:
    case ESHUTDOWN:
    case ECONNREFUSED:
    case ENOTCONN:
    case EHOSTUNREACH:
      return absl::UnavailableError(Cat(what, ": the Ceph cluster did not answer (", std::strerror(err), ")"));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(
          Cat(what, ": refused by Ceph (", std::strerror(err), "): check the cephx user and key in the secret"));
    case EDQUOT:
    case ENOSPC:
      return absl::ResourceExhaustedError(Cat(what, ": the pool is full or over its quota"));
    default:
      return ErrnoStatus(err, what);
  }
}

StatusOr<int64_t> PoolMaxAvailFromDf(std::string_view df_json, std::string_view pool) {
  auto j = nlohmann::json::parse(df_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("pools") || !j["pools"].is_array()) {
    return absl::InternalError("the monitors' df answer is not the JSON expected");
  }
  for (const auto& p : j["pools"]) {
    if (!p.is_object() || p.value("name", "") != pool) continue;
    if (!p.contains("stats") || !p["stats"].is_object() || !p["stats"].contains("max_avail") ||
        !p["stats"]["max_avail"].is_number_unsigned()) {
      return absl::InternalError(Cat("the monitors' df answer has no max_avail for pool ", pool));
    }
    uint64_t avail = p["stats"]["max_avail"].get<uint64_t>();
    return static_cast<int64_t>(std::min<uint64_t>(avail, INT64_MAX));
  }
  return absl::NotFoundError(Cat("pool ", pool, " is not in the cluster's df"));
}

Status ValidateRbdOptions(const RbdOptions& o) {
  if (o.mon_host.empty()) return absl::InvalidArgumentError("rbd: the monitor address (mon_host) is required");
  if (o.pool.empty() || o.pool.size() > 128 || o.pool.find_first_of("/@ \t\n") != std::string::npos) {
    return absl::InvalidArgumentError("rbd: the pool name is empty, too long or has / @ or spaces");
  }
  if (o.user.empty() || o.user.rfind("client.", 0) == 0 || o.user.find_first_of(" \t\n") != std::string::npos) {
    return absl::InvalidArgumentError("rbd: the cephx user is required, without the \"client.\" prefix");
  }
  if (o.key.empty()) return absl::InvalidArgumentError("rbd: the cephx key is empty");
  if (o.user == o.key || o.user.size() > 64 || o.user.find('=') != std::string::npos) {
    // Probably userID and userKey swapped: never echo it (it may be the key).
    return absl::InvalidArgumentError("rbd: userID does not look like a cephx id (are userID and userKey swapped?)");
  }
  if (o.timeout.count() <= 0 || o.timeout.count() > 300) {
    return absl::InvalidArgumentError("rbd: the timeout must be between 1 and 300 seconds");
  }
  return OkStatus();
}

StatusOr<RbdOptions> RbdOptionsFromCsi(const std::map<std::string, std::string>& params,
                                       const std::map<std::string, std::string>& secrets) {
  auto get = [](const std::map<std::string, std::string>& m, std::string_view k) -> const std::string* {
    auto it = m.find(std::string(k));
    return it == m.end() || it->second.empty() ? nullptr : &it->second;
  };
  RbdOptions o;
  const std::string* mons = get(params, kRbdMonitorsParam);
  if (mons == nullptr) return absl::InvalidArgumentError("rbd: StorageClass parameter \"monitors\" is required");
  o.mon_host = *mons;
  const std::string* pool = get(params, kRbdPoolParam);
  if (pool == nullptr) return absl::InvalidArgumentError("rbd: StorageClass parameter \"pool\" is required");
  o.pool = *pool;
  const std::string* user = get(secrets, kRbdUserIdSecret);
  const std::string* key = get(secrets, kRbdUserKeySecret);
  if (user == nullptr || key == nullptr) {
    // Usually the StorageClass names no secret (csi.storage.k8s.io/
    // provisioner-secret-name, node-stage-secret-name) or it lacks a key.
    return absl::InvalidArgumentError(
        "rbd: the request's secrets need \"userID\" and \"userKey\" (the Secret named by the StorageClass's "
        "csi.storage.k8s.io/*-secret-name parameters)");
  }
  o.user = *user;
  o.key = *key;
  // Validation messages name fields only, never the key's value.
  COCO_RETURN_IF_ERROR(ValidateRbdOptions(o));
  return o;
}

StatusOr<VolumeBackendPtr> NewRbdBackend(RbdOptions options) {
  COCO_RETURN_IF_ERROR(ValidateRbdOptions(options));
  return VolumeBackendPtr(std::make_unique<RbdBackend>(std::move(options)));
}

VolumeBackendPtr NewRbdClusterBackend(std::string monitors, std::optional<RbdCredentials> fallback,
                                      std::chrono::seconds timeout, RbdBackendMaker make) {
  return std::make_unique<RbdClusterBackend>(std::move(monitors), std::move(fallback), timeout, std::move(make));
}

StatusOr<RbdOptions> RbdClusterOptions(const std::string& monitors, const VolumeParams& params,
                                       const std::map<std::string, std::string>& secrets,
                                       const std::optional<RbdCredentials>& fallback, std::chrono::seconds timeout) {
  std::map<std::string, std::string> creds = secrets;
  const bool has_own =
      creds.count(std::string(kRbdUserIdSecret)) != 0 || creds.count(std::string(kRbdUserKeySecret)) != 0;
  if (!has_own) {
    if (!fallback) {
      return absl::FailedPreconditionError(
          "no Ceph credentials: the request carries no secrets (csi.storage.k8s.io/*-secret-name in the "
          "StorageClass) and the plugin has none of its own (--rbd-secret-dir)");
    }
    creds[std::string(kRbdUserIdSecret)] = fallback->user;
    creds[std::string(kRbdUserKeySecret)] = fallback->key;
  }
  std::map<std::string, std::string> cluster = {{std::string(kRbdMonitorsParam), monitors},
                                                {std::string(kRbdPoolParam), params.rbd_pool}};
  COCO_ASSIGN_OR_RETURN(RbdOptions o, RbdOptionsFromCsi(cluster, creds));
  o.timeout = timeout;
  COCO_RETURN_IF_ERROR(ValidateRbdOptions(o));
  return o;
}

StatusOr<RbdCredentials> ReadRbdSecretDir(const std::string& dir) {
  RbdCredentials c;
  for (auto [name, field] : {std::pair{kRbdUserIdSecret, &c.user}, std::pair{kRbdUserKeySecret, &c.key}}) {
    const std::string path = Cat(dir, "/", name);
    auto text = ReadFileToString(path, 4096);
    if (!text.ok())
      return absl::FailedPreconditionError(Cat("--rbd-secret-dir: cannot read ", path, ": ", text.status().message()));
    std::string v = std::move(*text);
    while (!v.empty() && (v.back() == '\n' || v.back() == '\r')) v.pop_back();
    if (v.empty()) return absl::FailedPreconditionError(Cat("--rbd-secret-dir: ", path, " is empty"));
    *field = std::move(v);
  }
  return c;
}

}  // namespace cocostorage::csi
