#include "kbs/init_data.h"

#include <openssl/evp.h>
#include <toml++/toml.h>

#include <cctype>
#include <sstream>

#include "cocostorage/common/strings.h"

namespace cocostorage::agent::kbs {

std::string DigestHex(const InitData& init_data) {
  return HexEncode(std::string_view(reinterpret_cast<const char*>(init_data.digest.data()), init_data.digest.size()));
}

StatusOr<InitData> ParseInitData(std::string raw) {
  if (raw.size() > kMaxInitDataBytes) return absl::InvalidArgumentError("init-data is larger than 1 MiB");
  toml::table doc;
  try {
    doc = toml::parse(raw);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(
        Cat("init-data is not TOML: ", e.description(), " at line ", e.source().begin.line));
  }
  InitData out;
  for (const auto& [key, node] : doc) {
    const std::string_view k = key.str();
    if (k == "version" && node.is_string())
      out.version = *node.value<std::string>();
    else if (k == "algorithm" && node.is_string())
      out.algorithm = *node.value<std::string>();
    else if (k == "data" && node.is_table()) {
      for (const auto& [dk, dv] : *node.as_table()) {
        if (!dv.is_string())
          return absl::InvalidArgumentError(Cat("init-data: [data] value of \"", dk.str(), "\" is not a string"));
        out.data.emplace(std::string(dk.str()), *dv.value<std::string>());
      }
    } else {
      return absl::InvalidArgumentError(Cat("init-data: unexpected or mistyped top-level key \"", k, "\""));
    }
  }
  if (out.version != "0.1.0")
    return absl::InvalidArgumentError(Cat("init-data version \"", out.version, "\" is not 0.1.0"));
  const EVP_MD* md = out.algorithm == "sha256"   ? EVP_sha256()
                     : out.algorithm == "sha384" ? EVP_sha384()
                     : out.algorithm == "sha512" ? EVP_sha512()
                                                 : nullptr;
  if (md == nullptr)
    return absl::InvalidArgumentError(Cat("init-data algorithm \"", out.algorithm, "\" is not sha256/sha384/sha512"));
  out.digest.resize(EVP_MD_get_size(md));
  unsigned int len = 0;
  if (EVP_Digest(raw.data(), raw.size(), out.digest.data(), &len, md, nullptr) != 1 || len != out.digest.size())
    return absl::InternalError("init-data digest failed");
  out.raw = std::move(raw);
  return out;
}

Status VerifyInitDataDigest(const InitData& init_data, std::string_view expected_hex) {
  std::string want;
  for (char c : expected_hex) want.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  const std::string have = DigestHex(init_data);
  if (want != have)
    return absl::PermissionDeniedError(Cat("init-data ", init_data.algorithm, " digest ", have,
                                           " does not match the configured ", want.empty() ? "(none)" : want));
  return OkStatus();
}

}  // namespace cocostorage::agent::kbs
