#include "policy/policy_source.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>

#include "attestation_agent/attestation_agent.pb.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"
#include "cocostorage/ttrpc/client.h"
#include "policy/launch_field.h"

namespace cocostorage::agent::policy {
namespace {

constexpr char kAaService[] = "attestation_agent.AttestationAgentService";
constexpr std::chrono::milliseconds kAaTimeout{10000};
constexpr char kSnpProvider[] = "sev_guest";  // KBUILD_MODNAME of drivers/virt/coco/sev-guest
constexpr size_t kMaxTsmAttrBytes = 64 * 1024;

std::string Hex(const uint8_t* p, size_t n) { return HexEncode(std::string_view(reinterpret_cast<const char*>(p), n)); }

// Reads a small regular file without following a symlink in its last
// component (init-data and configfs attributes are both regular files).
StatusOr<std::string> ReadRegularFile(const std::string& path, size_t max_bytes) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return ErrnoStatus(errno, Cat("opening ", path));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, Cat("stat ", path));
  if (!S_ISREG(st.st_mode)) return absl::FailedPreconditionError(Cat(path, " is not a regular file"));
  std::string out;
  char buf[8192];
  while (true) {
    const ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, Cat("reading ", path));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes)
      return absl::FailedPreconditionError(Cat(path, " is larger than ", max_bytes, " bytes"));
  }
  return out;
}

class RealTsmFs final : public TsmFs {
 public:
  bool Exists(const std::string& path) override {
    struct stat st {};
    return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }
  Status MakeDir(const std::string& path) override {
    if (mkdir(path.c_str(), 0700) != 0) return ErrnoStatus(errno, Cat("mkdir ", path));
    return OkStatus();
  }
  Status RemoveDir(const std::string& path) override {
    if (rmdir(path.c_str()) != 0) return ErrnoStatus(errno, Cat("rmdir ", path));
    return OkStatus();
  }
  StatusOr<std::string> ReadFile(const std::string& path, size_t max_bytes) override {
    return ReadRegularFile(path, max_bytes);
  }
  Status WriteFile(const std::string& path, std::string_view data) override {
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid()) return ErrnoStatus(errno, Cat("opening ", path));
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = write(fd.get(), data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus(errno, Cat("writing ", path));
      done += static_cast<size_t>(n);
    }
    // configfs hands a binary attribute's bytes to the driver on close: its
    // error is the write's error.
    if (close(fd.Release()) != 0) return ErrnoStatus(errno, Cat("closing ", path));
    return OkStatus();
  }
};

class ConfiguredDigestVerifier final : public LaunchFieldVerifier {
 public:
  explicit ConfiguredDigestVerifier(std::string hex) : hex_(std::move(hex)) {}
  const char* name() const override { return "configured-digest"; }
  Status Verify(const kbs::InitData& init_data) override { return kbs::VerifyInitDataDigest(init_data, hex_); }

 private:
  std::string hex_;
};

// Removes the report entry however the attempt ends: entries are a kernel
// resource, and a leftover one would hold the last report.
class ScopedTsmEntry {
 public:
  ScopedTsmEntry(TsmFs* fs, std::string path) : fs_(fs), path_(std::move(path)) {}
  ~ScopedTsmEntry() {
    if (Status s = fs_->RemoveDir(path_); !s.ok())
      log::Warn("policy.tsm_rmdir_failed", {{"path", path_}, {"error", std::string(s.message())}});
  }
  ScopedTsmEntry(const ScopedTsmEntry&) = delete;
  ScopedTsmEntry& operator=(const ScopedTsmEntry&) = delete;

 private:
  TsmFs* fs_;
  std::string path_;
};

class TsmVerifier final : public LaunchFieldVerifier {
 public:
  TsmVerifier(std::string root, std::unique_ptr<TsmFs> fs) : root_(std::move(root)), fs_(std::move(fs)) {}
  const char* name() const override { return "tsm"; }

  Status Verify(const kbs::InitData& init_data) override {
    if (!fs_->Exists(root_))
      return absl::FailedPreconditionError(
          Cat("no configfs-tsm report directory at ", root_, " (needs Linux >= 6.7 with configfs mounted)"));
    for (int attempt = 0; attempt < kTsmAttempts; ++attempt) {
      bool raced = false;
      Status s = Attempt(init_data, &raced);
      if (!raced) return s;
      log::Warn("policy.tsm_raced", {{"attempt", std::to_string(attempt + 1)}});
    }
    return absl::UnavailableError(
        Cat("configfs-tsm: another writer changed the report entry during each of ", kTsmAttempts, " attempts"));
  }

 private:
  StatusOr<uint64_t> ReadGeneration(const std::string& dir) {
    COCO_ASSIGN_OR_RETURN(std::string text, fs_->ReadFile(dir + "/generation", 64));
    unsigned long long g = 0;
    if (!ParseUint64(TrimWhitespace(text), &g))
      return absl::UnavailableError(Cat("configfs-tsm: generation \"", TrimWhitespace(text), "\" is not a number"));
    return static_cast<uint64_t>(g);
  }

  // One report entry. `*raced`: the generation moved by more than our own
  // write, so the outblob may answer someone else's inblob.
  Status Attempt(const kbs::InitData& init_data, bool* raced) {
    static std::atomic<uint64_t> counter{0};
    const std::string dir = Cat(root_, "/cocostorage-", static_cast<int64_t>(getpid()), "-", counter++);
    if (Status s = fs_->MakeDir(dir); !s.ok())
      return absl::UnavailableError(Cat("configfs-tsm: ", s.message()));  // e.g. sev-guest not loaded yet
    ScopedTsmEntry entry(fs_.get(), dir);

    auto provider = fs_->ReadFile(dir + "/provider", 64);
    if (!provider.ok()) return absl::UnavailableError(Cat("configfs-tsm: ", provider.status().message()));
    const std::string_view prov = TrimWhitespace(*provider);
    if (prov != kSnpProvider)
      return absl::FailedPreconditionError(Cat("configfs-tsm provider is \"", prov, "\", not ", kSnpProvider,
                                               ": the tsm verifier reads SNP HOST_DATA only (use aa)"));
    if (init_data.digest.size() != kSnpHostDataSize)
      return absl::FailedPreconditionError(
          Cat("init-data algorithm ", init_data.algorithm, " does not fit SNP HOST_DATA (32 bytes): use sha256"));

    auto gen_before = ReadGeneration(dir);
    if (!gen_before.ok()) return absl::UnavailableError(Cat("configfs-tsm: ", gen_before.status().message()));
    // A fresh nonce as REPORT_DATA: a report that does not carry it was not
    // made for this request (a stale or foreign outblob).
    std::array<uint8_t, kSnpReportDataSize> nonce{};
    if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) return absl::InternalError("RAND_bytes failed");
    if (Status s = fs_->WriteFile(dir + "/inblob",
                                  std::string_view(reinterpret_cast<const char*>(nonce.data()), nonce.size()));
        !s.ok())
      return absl::UnavailableError(Cat("configfs-tsm: ", s.message()));
    auto report = fs_->ReadFile(dir + "/outblob", kMaxTsmAttrBytes);
    if (!report.ok())  // the PSP or the host's guest-request channel refused: try again later
      return absl::UnavailableError(Cat("configfs-tsm: ", report.status().message()));
    auto gen_after = ReadGeneration(dir);
    if (!gen_after.ok()) return absl::UnavailableError(Cat("configfs-tsm: ", gen_after.status().message()));
    if (*gen_after != *gen_before + 1) {
      *raced = true;
      return OkStatus();
    }

    auto fields = ParseSnpReport(*report);
    if (!fields.ok()) return absl::FailedPreconditionError(Cat("configfs-tsm outblob: ", fields.status().message()));
    if (CRYPTO_memcmp(fields->report_data.data(), nonce.data(), nonce.size()) != 0)
      return absl::UnavailableError("configfs-tsm: the report does not carry the REPORT_DATA we wrote (stale outblob)");
    if (CRYPTO_memcmp(fields->host_data.data(), init_data.digest.data(), kSnpHostDataSize) != 0)
      return absl::PermissionDeniedError(Cat("init-data sha256 digest ", kbs::DigestHex(init_data),
                                             " does not match SNP HOST_DATA ",
                                             Hex(fields->host_data.data(), fields->host_data.size())));
    return OkStatus();
  }

  std::string root_;
  std::unique_ptr<TsmFs> fs_;
};

class AttestationAgentVerifier final : public LaunchFieldVerifier {
 public:
  AttestationAgentVerifier(std::string socket, std::chrono::milliseconds timeout)
      : socket_(std::move(socket)), timeout_(timeout) {}
  const char* name() const override { return "aa"; }

  Status Verify(const kbs::InitData& init_data) override {
    auto client = ttrpc::Client::ConnectUnix(socket_);
    if (!client.ok())  // missing socket or refused connection: the AA is not up (yet)
      return absl::UnavailableError(Cat("Attestation Agent at ", socket_, ": ", client.status().message()));
    attestation_agent::CheckInitDataRequest req;
    req.set_digest(std::string(reinterpret_cast<const char*>(init_data.digest.data()), init_data.digest.size()));
    auto reply = (*client)->Call(kAaService, "CheckInitData", req.SerializeAsString(), timeout_);
    if (!reply.ok()) {
      const Status& s = reply.status();
      switch (s.code()) {
        case absl::StatusCode::kUnavailable:
        case absl::StatusCode::kDeadlineExceeded:
          return absl::UnavailableError(Cat("Attestation Agent CheckInitData: ", s.message()));
        case absl::StatusCode::kUnimplemented:
        case absl::StatusCode::kNotFound:  // what Rust ttrpc answers for a method it does not serve
          return absl::FailedPreconditionError(
              Cat("the Attestation Agent at ", socket_, " does not serve CheckInitData: ", s.message()));
        default:  // the AA compared and refused (it answers a mismatch INTERNAL with a message)
          return absl::PermissionDeniedError(Cat("the Attestation Agent refused init-data ", init_data.algorithm,
                                                 " digest ", kbs::DigestHex(init_data), ": ", s.message()));
      }
    }
    attestation_agent::CheckInitDataResponse resp;
    if (!resp.ParseFromString(*reply))
      return absl::FailedPreconditionError("Attestation Agent: unparsable CheckInitData reply");
    return OkStatus();
  }

 private:
  std::string socket_;
  std::chrono::milliseconds timeout_;
};

// configfs-tsm where the kernel has it (SNP: HOST_DATA in a PSP-signed
// report). Never the Attestation Agent: an OK from its CheckInitData does not
// always mean a comparison happened (older AAs answer OK where the TEE cannot
// check, current ones no longer serve the method), so `aa` is an explicit,
// documented choice only. Decided at the first Verify: configfs may be
// mounted after this agent starts.
class AutoVerifier final : public LaunchFieldVerifier {
 public:
  explicit AutoVerifier(PolicySourceConfig config) : config_(std::move(config)) {}
  const char* name() const override { return chosen_ ? chosen_->name() : "auto"; }

  Status Verify(const kbs::InitData& init_data) override {
    if (!chosen_) {
      if (!RealTsmFs().Exists(config_.tsm_root))
        return absl::UnavailableError(Cat("no way to verify init-data here: no configfs-tsm at ", config_.tsm_root,
                                          " (choose a verifier explicitly: policy.verifier)"));
      chosen_ = NewTsmVerifier(config_.tsm_root, NewRealTsmFs());
    }
    return chosen_->Verify(init_data);
  }

 private:
  PolicySourceConfig config_;
  std::unique_ptr<LaunchFieldVerifier> chosen_;
};

uint32_t LoadLe32(std::string_view b, size_t off) {
  return static_cast<uint32_t>(static_cast<uint8_t>(b[off])) |
         static_cast<uint32_t>(static_cast<uint8_t>(b[off + 1])) << 8 |
         static_cast<uint32_t>(static_cast<uint8_t>(b[off + 2])) << 16 |
         static_cast<uint32_t>(static_cast<uint8_t>(b[off + 3])) << 24;
}

bool IsHex(std::string_view s) {
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

bool IsAbsolute(const std::string& p) { return !p.empty() && p[0] == '/'; }

}  // namespace

StatusOr<SnpReportFields> ParseSnpReport(std::string_view report) {
  if (report.size() < kSnpReportSize)
    return absl::InvalidArgumentError(
        Cat("SNP report is ", report.size(), " bytes, shorter than an ATTESTATION_REPORT (", kSnpReportSize, ")"));
  SnpReportFields f;
  f.version = LoadLe32(report, 0);
  if (f.version < kSnpMinReportVersion || f.version > kSnpMaxReportVersion)
    return absl::InvalidArgumentError(Cat("SNP report version ", f.version, " is not one we know (",
                                          kSnpMinReportVersion, "..", kSnpMaxReportVersion, ")"));
  std::memcpy(f.report_data.data(), report.data() + kSnpReportDataOffset, kSnpReportDataSize);
  std::memcpy(f.host_data.data(), report.data() + kSnpHostDataOffset, kSnpHostDataSize);
  return f;
}

StatusOr<std::array<uint8_t, kSnpHostDataSize>> SnpReportHostData(std::string_view report) {
  COCO_ASSIGN_OR_RETURN(SnpReportFields f, ParseSnpReport(report));
  return f.host_data;
}

std::unique_ptr<TsmFs> NewRealTsmFs() { return std::make_unique<RealTsmFs>(); }

std::unique_ptr<LaunchFieldVerifier> NewTsmVerifier(std::string tsm_root, std::unique_ptr<TsmFs> fs) {
  return std::make_unique<TsmVerifier>(std::move(tsm_root), std::move(fs));
}

std::unique_ptr<LaunchFieldVerifier> NewAttestationAgentVerifier(std::string socket,
                                                                 std::chrono::milliseconds timeout) {
  return std::make_unique<AttestationAgentVerifier>(std::move(socket), timeout);
}

std::unique_ptr<LaunchFieldVerifier> NewConfiguredDigestVerifier(std::string digest_hex) {
  return std::make_unique<ConfiguredDigestVerifier>(std::move(digest_hex));
}

StatusOr<std::unique_ptr<LaunchFieldVerifier>> NewLaunchFieldVerifier(const PolicySourceConfig& c) {
  if (c.verifier == "configured-digest") {
    if (!c.insecure_test_build)
      return absl::FailedPreconditionError(
          "the configured-digest verifier trusts the agent's own config, not the TEE: only a test build "
          "(insecure_test_build) may use it");
    if (c.configured_digest_hex.empty())
      return absl::InvalidArgumentError("the configured-digest verifier needs init_data_digest");
    return NewConfiguredDigestVerifier(c.configured_digest_hex);
  }
  if (c.verifier == "tsm") return NewTsmVerifier(c.tsm_root, NewRealTsmFs());
  if (c.verifier == "aa") return NewAttestationAgentVerifier(c.aa_socket, kAaTimeout);
  if (c.verifier == "auto") return std::unique_ptr<LaunchFieldVerifier>(new AutoVerifier(c));
  return absl::InvalidArgumentError(
      Cat("policy verifier \"", c.verifier, "\" is not auto, tsm, aa or configured-digest"));
}

Status ApplyPolicyConfigJson(const nlohmann::json& policy, PolicySourceConfig* out) {
  if (!policy.is_object()) return absl::InvalidArgumentError("config file: \"policy\" is not an object");
  for (const auto& item : policy.items()) {
    const std::string& key = item.key();
    const nlohmann::json& value = item.value();
    auto str = [&](std::string* field) {
      if (!value.is_string()) return false;
      *field = value.get<std::string>();
      return true;
    };
    bool ok = false;
    if (key == "required" && value.is_boolean()) {
      out->required = value.get<bool>();
      ok = true;
    } else if (key == "verifier")
      ok = str(&out->verifier);
    else if (key == "init_data")
      ok = str(&out->init_data_path);
    else if (key == "init_data_digest")
      ok = str(&out->configured_digest_hex);
    else if (key == "tsm_root")
      ok = str(&out->tsm_root);
    else if (key == "aa_socket")
      ok = str(&out->aa_socket);
    if (!ok) return absl::InvalidArgumentError(Cat("config file: unknown or mistyped key \"policy.", key, "\""));
  }
  return OkStatus();
}

Status ValidatePolicySourceConfig(const PolicySourceConfig& c) {
  if (c.verifier != "auto" && c.verifier != "tsm" && c.verifier != "aa" && c.verifier != "configured-digest")
    return absl::InvalidArgumentError(
        Cat("policy.verifier \"", c.verifier, "\" is not auto, tsm, aa or configured-digest"));
  if (!c.required && !c.insecure_test_build)
    return absl::FailedPreconditionError(
        "running without an attested storage policy (policy.required=false) is for test builds only "
        "(insecure_test_build)");
  const std::string& d = c.configured_digest_hex;
  if (!d.empty() && (!IsHex(d) || (d.size() != 64 && d.size() != 96 && d.size() != 128)))
    return absl::InvalidArgumentError(
        "policy.init_data_digest is not the hex of a sha256, sha384 or sha512 digest (64, 96 or 128 digits)");
  if (c.verifier == "configured-digest") {
    if (!c.insecure_test_build)
      return absl::FailedPreconditionError(
          "the configured-digest verifier trusts the agent's own config, not the TEE: only a test build "
          "(insecure_test_build) may use it");
    if (d.empty()) return absl::InvalidArgumentError("policy.verifier configured-digest needs policy.init_data_digest");
  } else if (!d.empty()) {
    return absl::InvalidArgumentError(
        Cat("policy.init_data_digest is used by the configured-digest verifier only, not ", c.verifier));
  }
  for (const auto& [name, path] : {std::pair<const char*, const std::string*>{"init_data", &c.init_data_path},
                                   {"tsm_root", &c.tsm_root},
                                   {"aa_socket", &c.aa_socket}})
    if (!IsAbsolute(*path)) return absl::InvalidArgumentError(Cat("policy.", name, " must be an absolute path"));
  return OkStatus();
}

PolicyState LoadPolicyState(const PolicySourceConfig& config, LaunchFieldVerifier& verifier,
                            const StoragePolicyParser& parse) {
  PolicyState st;
  try {
    auto raw = ReadRegularFile(config.init_data_path, kbs::kMaxInitDataBytes);
    if (!raw.ok()) {
      st.unverified_reason = Cat("cannot read init-data: ", raw.status().message());
      // kata-agent may write the file after this agent started.
      st.retryable = absl::IsNotFound(raw.status());
      return st;
    }
    auto init_data = kbs::ParseInitData(std::move(*raw));
    if (!init_data.ok()) {
      st.unverified_reason = std::string(init_data.status().message());
      return st;
    }
    st.init_data_digest_hex = kbs::DigestHex(*init_data);
    if (Status v = verifier.Verify(*init_data); !v.ok()) {
      st.unverified_reason = Cat("init-data ", init_data->algorithm, " digest ", st.init_data_digest_hex,
                                 " not verified (", verifier.name(), "): ", v.message());
      st.retryable = absl::IsUnavailable(v);
      return st;
    }
    auto it = init_data->data.find("cocostorage.toml");
    if (it == init_data->data.end()) {
      st.unverified_reason = "init-data holds no cocostorage.toml";
      return st;
    }
    auto policy = parse(it->second);
    if (!policy.ok()) {
      st.unverified_reason = Cat("cocostorage.toml: ", policy.status().message());
      return st;
    }
    st.policy = std::move(*policy);
    st.verified_by = verifier.name();
  } catch (const std::exception& e) {  // never let a parser's or allocator's exception out
    st = PolicyState{};
    st.unverified_reason = Cat("loading the storage policy failed: ", e.what());
  }
  return st;
}

}  // namespace cocostorage::agent::policy
