// Key providers for KBS-released keys (persistent volumes). Both return the
// resource's bytes in locked memory; KeyProviderRouter refuses one that is
// not exactly the size the cipher suite needs (the key format is raw bytes).
//  - cdh: the Confidential Data Hub's GetResource over ttrpc, the default in
//    a CoCo guest: CDH and the Attestation Agent attest for every TEE.
//  - kbs: our own trustee KBS client (guests without guest components, tests).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "kbs/kbs_client.h"
#include "keys/key_provider.h"

namespace cocostorage::agent {

class KbsKeyProvider final : public KeyProvider {
 public:
  explicit KbsKeyProvider(std::unique_ptr<kbs::KbsClient> client) : client_(std::move(client)) {}
  StatusOr<SecureBuffer> GetKey(const KeySource& source, size_t bytes) override;

 private:
  std::unique_ptr<kbs::KbsClient> client_;
};

// Where CDH listens once our agent owns /run/confidential-containers/cdh.sock
// (cdh.toml `socket`); the components manifest moves it there.
inline constexpr char kCdhResourceSocket[] = "/run/confidential-containers/cdh-upstream.sock";

class CdhKeyProvider final : public KeyProvider {
 public:
  CdhKeyProvider(std::string socket_path, std::chrono::milliseconds timeout)
      : socket_(std::move(socket_path)), timeout_(timeout) {}
  StatusOr<SecureBuffer> GetKey(const KeySource& source, size_t bytes) override;

 private:
  std::string socket_;
  std::chrono::milliseconds timeout_;
};

}  // namespace cocostorage::agent
