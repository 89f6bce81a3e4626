// The narrow HTTP seam the KBS client talks through. The production
// implementation is libcurl (HTTPS with a configured CA bundle, TLS 1.2+,
// timeouts, bounded bodies); tests may substitute a fake.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cocostorage/common/status.h"

namespace cocostorage::agent::kbs {

struct HttpRequest {
  std::string method;  // "GET" | "POST"
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{60000};
};

struct HttpResponse {
  long status = 0;
  // Header names lower-cased; values as received (trimmed).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

class HttpClient {
 public:
  virtual ~HttpClient() = default;
  // A response with any status code, or: UNAVAILABLE (cannot connect, TLS
  // failure, connection dropped), DEADLINE_EXCEEDED (timeout),
  // RESOURCE_EXHAUSTED (body larger than allowed).
  virtual StatusOr<HttpResponse> Send(const HttpRequest& request) = 0;
};

struct CurlOptions {
  // PEM bundle the server's certificate must chain to (https://); empty =
  // the system store. Plain http:// is refused unless allow_plain_http.
  std::string ca_bundle;
  bool allow_plain_http = false;
  size_t max_body_bytes = 256 * 1024;
};

StatusOr<std::unique_ptr<HttpClient>> NewCurlHttpClient(const CurlOptions& options);

}  // namespace cocostorage::agent::kbs
