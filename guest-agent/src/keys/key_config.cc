#include "keys/key_config.h"

#include <sys/stat.h>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::agent {

Status ApplyKeyConfigJson(const nlohmann::json& keys, KeyConfig* out) {
  if (!keys.is_object()) return absl::InvalidArgumentError("config file: \"keys\" is not an object");
  for (const auto& item : keys.items()) {
    // Not a structured binding: clang before 16 cannot capture one in a lambda.
    const std::string& key = item.key();
    const nlohmann::json& value = item.value();
    auto str = [&](std::string* field) {
      if (!value.is_string()) return false;
      *field = value.get<std::string>();
      return true;
    };
    bool ok = false;
    if (key == "provider")
      ok = str(&out->provider);
    else if (key == "cdh_socket")
      ok = str(&out->cdh_socket);
    else if (key == "kbs_url")
      ok = str(&out->kbs_url);
    else if (key == "kbs_ca_bundle")
      ok = str(&out->kbs_ca_bundle);
    else if (key == "tee_key_algorithm")
      ok = str(&out->tee_key_algorithm);
    else if (key == "attester")
      ok = str(&out->attester);
    else if (key == "aa_socket")
      ok = str(&out->aa_socket);
    else if (key == "tee")
      ok = str(&out->tee);
    else if (key == "init_data")
      ok = str(&out->init_data_path);
    else if (key == "init_data_digest")
      ok = str(&out->init_data_digest);
    else if (key == "timeout_ms" && value.is_number_unsigned() && value.get<uint64_t>() > 0 &&
             value.get<uint64_t>() <= 600000) {
      out->timeout = std::chrono::milliseconds(value.get<uint64_t>());
      ok = true;
    } else if (key == "insecure_test_build" && value.is_boolean()) {
      out->insecure_test_build = value.get<bool>();
      ok = true;
    }
    if (!ok) return absl::InvalidArgumentError(Cat("config file: unknown or mistyped key \"keys.", key, "\""));
  }
  return OkStatus();
}

StatusOr<std::unique_ptr<KeyProvider>> NewRemoteKeyProvider(const KeyConfig& c) {
  if (c.provider == "none") return std::unique_ptr<KeyProvider>();
  if (c.provider == "cdh") return std::unique_ptr<KeyProvider>(new CdhKeyProvider(c.cdh_socket, c.timeout));
  if (c.provider != "kbs")
    return absl::InvalidArgumentError(Cat("key provider \"", c.provider, "\" is not cdh, kbs or none"));

  if (c.kbs_url.empty()) return absl::InvalidArgumentError("key provider kbs needs kbs_url");
  const bool plain = c.kbs_url.rfind("http://", 0) == 0;
  if (!plain && c.kbs_url.rfind("https://", 0) != 0)
    return absl::InvalidArgumentError(Cat("kbs_url ", c.kbs_url, " is neither https:// nor http://"));
  if (plain && !c.insecure_test_build)
    return absl::FailedPreconditionError(
        Cat("kbs_url ", c.kbs_url, " is plain HTTP: only a test build (insecure_test_build) may use it"));
  COCO_ASSIGN_OR_RETURN(kbs::KeyAlgorithm alg, kbs::ParseKeyAlgorithm(c.tee_key_algorithm));

  std::unique_ptr<kbs::Attester> attester;
  if (c.attester == "sample") {
    if (!c.insecure_test_build)
      return absl::FailedPreconditionError(
          "the sample attester proves nothing: only a test build (insecure_test_build) may use it");
    attester = kbs::NewSampleAttester();
  } else if (c.attester == "aa") {
    if (c.tee.empty()) return absl::InvalidArgumentError("the aa attester needs `tee` (snp, tdx, ...)");
    attester = kbs::NewAttestationAgentAttester(c.aa_socket, c.tee, c.timeout);
  } else {
    return absl::InvalidArgumentError(Cat("attester \"", c.attester, "\" is not aa or sample"));
  }

  // Init-data goes to the KBS verbatim; with the sample attester nothing
  // binds it to a launch measurement, so its digest must be the configured one.
  std::optional<std::string> init_data;
  struct stat st {};
  if (!c.init_data_path.empty() && stat(c.init_data_path.c_str(), &st) == 0) {
    COCO_ASSIGN_OR_RETURN(std::string raw, ReadFileToString(c.init_data_path));
    COCO_ASSIGN_OR_RETURN(kbs::InitData parsed, kbs::ParseInitData(std::move(raw)));
    if (c.attester == "sample") COCO_RETURN_IF_ERROR(kbs::VerifyInitDataDigest(parsed, c.init_data_digest));
    log::Info("kbs.init_data",
              {{"path", c.init_data_path}, {"algorithm", parsed.algorithm}, {"digest", kbs::DigestHex(parsed)}});
    init_data = std::move(parsed.raw);
  } else if (!c.init_data_digest.empty()) {
    return absl::FailedPreconditionError(
        Cat("init_data_digest is configured but there is no init-data at ", c.init_data_path));
  }

  kbs::CurlOptions curl;
  curl.ca_bundle = c.kbs_ca_bundle;
  curl.allow_plain_http = plain;
  COCO_ASSIGN_OR_RETURN(std::unique_ptr<kbs::HttpClient> http, kbs::NewCurlHttpClient(curl));
  kbs::KbsClientOptions options;
  options.url = c.kbs_url;
  options.key_algorithm = alg;
  options.init_data_toml = std::move(init_data);
  options.request_timeout = c.timeout;
  return std::unique_ptr<KeyProvider>(
      new KbsKeyProvider(std::make_unique<kbs::KbsClient>(std::move(options), std::move(http), std::move(attester))));
}

}  // namespace cocostorage::agent
