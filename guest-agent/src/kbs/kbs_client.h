// Client of a trustee KBS (protocol 0.4.0): auth → attest → resource, with
// the reference client's retry rules (kbs-protocol.md): a resource GET that
// gets 401 runs a new handshake and tries again (3 attempts in all); 404 fails
// at once; the handshake is retried on transport failures and 5xx, 1 s apart,
// 5 attempts. One TEE key pair per handshake; the session (cookie, token, key)
// is reused until the KBS refuses it. Thread-safe (one call at a time).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "cocostorage/common/secure_buffer.h"
#include "cocostorage/common/status.h"
#include "kbs/attester.h"
#include "kbs/http_client.h"
#include "kbs/jose.h"

namespace cocostorage::agent::kbs {

struct KbsClientOptions {
  std::string url;  // https://host:port, no path
  KeyAlgorithm key_algorithm = KeyAlgorithm::kEcdhEsA256Kw;
  std::optional<std::string> init_data_toml;  // sent in the attest request
  int handshake_attempts = 5;
  std::chrono::milliseconds handshake_retry_delay{1000};
  int resource_attempts = 3;
  std::chrono::milliseconds request_timeout{60000};
};

class KbsClient {
 public:
  using Sleep = std::function<void(std::chrono::milliseconds)>;
  KbsClient(KbsClientOptions options, std::unique_ptr<HttpClient> http, std::unique_ptr<Attester> attester,
            Sleep sleep = nullptr);

  // The resource's plaintext, in locked memory. Errors, each distinct:
  //  UNAVAILABLE / DEADLINE_EXCEEDED  KBS unreachable after the retries
  //  PERMISSION_DENIED  attestation refused, or the KBS denies the resource
  //                     (policy, expired token after all retries), or its
  //                     reply does not decrypt under this VM's TEE key
  //  NOT_FOUND          no such resource path (404, or a 401 saying so)
  //  INVALID_ARGUMENT   the URI, or a malformed KBS reply
  StatusOr<SecureBuffer> GetResource(std::string_view kbs_uri);

 private:
  Status Handshake();
  Status HandshakeOnce();
  std::vector<std::pair<std::string, std::string>> SessionHeaders() const;

  KbsClientOptions options_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<Attester> attester_;
  Sleep sleep_;
  std::mutex mu_;
  std::optional<TeeKeyPair> key_;
  std::string session_id_;
  std::string token_;
};

}  // namespace cocostorage::agent::kbs
