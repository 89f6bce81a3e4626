#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <mutex>

#include "cocostorage/common/strings.h"
#include "kbs/http_client.h"

namespace cocostorage::agent::kbs {
namespace {

struct Transfer {
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  size_t max_body = 0;
  bool overflow = false;
};

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (t->body.size() + n > t->max_body) {
    t->overflow = true;
    return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
  }
  t->body.append(data, n);
  return n;
}

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  std::string_view line(data, n);
  // A new status line (e.g. after a 100 Continue) starts a new header set.
  if (line.substr(0, 5) == "HTTP/") {
    t->headers.clear();
    return n;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos || t->headers.size() >= 100) return n;
  std::string name(TrimWhitespace(line.substr(0, colon)));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  t->headers.emplace_back(std::move(name), std::string(TrimWhitespace(line.substr(colon + 1))));
  return n;
}

class CurlHttpClient final : public HttpClient {
 public:
  explicit CurlHttpClient(CurlOptions options) : options_(std::move(options)) {}

  StatusOr<HttpResponse> Send(const HttpRequest& request) override {
    const bool https = request.url.rfind("https://", 0) == 0;
    if (!https && !(options_.allow_plain_http && request.url.rfind("http://", 0) == 0))
      return absl::InvalidArgumentError(Cat("KBS URL ", request.url, " is not https:// (plain HTTP is not allowed)"));
    CURL* curl = curl_easy_init();
    if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
    Transfer t;
    t.max_body = options_.max_body_bytes;
    curl_slist* headers = nullptr;
    for (const auto& [k, v] : request.headers) headers = curl_slist_append(headers, Cat(k, ": ", v).c_str());
    // No "Expect: 100-continue" round trip for small bodies.
    headers = curl_slist_append(headers, "Expect:");
    curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, options_.allow_plain_http ? "http,https" : "https");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::min<long long>(request.timeout.count(), 10000)));
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(curl, CURLOPT_SSLVERSION, CURL_SSLVERSION_TLSv1_2);
    if (!options_.ca_bundle.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_bundle.c_str());
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
    if (request.method == "POST") {
      curl_easy_setopt(curl, CURLOPT_POST, 1L);
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.data());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(request.body.size()));
    } else if (request.method != "GET") {
      curl_slist_free_all(headers);
      curl_easy_cleanup(curl);
      return absl::InvalidArgumentError(Cat("unsupported HTTP method ", request.method));
    }
    CURLcode rc = curl_easy_perform(curl);
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (t.overflow)
      return absl::ResourceExhaustedError(
          Cat("reply from ", request.url, " is larger than ", options_.max_body_bytes, " bytes"));
    if (rc == CURLE_OPERATION_TIMEDOUT)
      return absl::DeadlineExceededError(
          Cat("no reply from ", request.url, " within ", request.timeout.count(), " ms"));
    if (rc != CURLE_OK) return absl::UnavailableError(Cat("cannot reach ", request.url, ": ", curl_easy_strerror(rc)));
    HttpResponse out;
    out.status = code;
    out.headers = std::move(t.headers);
    out.body = std::move(t.body);
    return out;
  }

 private:
  CurlOptions options_;
};

}  // namespace

StatusOr<std::unique_ptr<HttpClient>> NewCurlHttpClient(const CurlOptions& options) {
  static std::once_flag once;
  static CURLcode init = CURLE_OK;
  std::call_once(once, [] { init = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (init != CURLE_OK) return absl::InternalError("curl_global_init failed");
  return std::unique_ptr<HttpClient>(new CurlHttpClient(options));
}

}  // namespace cocostorage::agent::kbs
