#include "init_data_writer.h"

#include <toml++/toml.h>
#include <zlib.h>

#include <cstring>
#include <exception>
#include <vector>

#include "cocostorage/common/base64.h"
#include "cocostorage/common/strings.h"
#include "kbs/init_data.h"

namespace cocostorage::policygen {
namespace {

// The [data] entry for the policy. A multi-line literal string keeps the
// policy readable in the file; text it cannot hold verbatim (''' inside, a
// trailing quote, control characters other than tab and LF) is written as
// an escaped basic string instead.
std::string PolicyEntry(std::string_view policy) {
  bool literal_ok = policy.find("'''") == std::string_view::npos && (policy.empty() || policy.back() != '\'');
  for (char ch : policy) {
    const auto u = static_cast<unsigned char>(ch);
    if ((u < 0x20 && ch != '\n' && ch != '\t') || u == 0x7f) literal_ok = false;
  }
  std::string out = Cat("\"", kPolicyDataKey, "\" = ");
  if (literal_ok) {
    // A newline right after the opening delimiter is not part of the value.
    out += Cat("'''\n", policy, "'''\n");
    return out;
  }
  out.push_back('"');
  for (char ch : policy) {
    const auto u = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (u < 0x20 || u == 0x7f) {
          static const char kHex[] = "0123456789ABCDEF";
          out += "\\u00";
          out.push_back(kHex[u >> 4]);
          out.push_back(kHex[u & 15]);
        } else {
          out.push_back(ch);
        }
    }
  }
  out += "\"\n";
  return out;
}

// Byte offset of the start of 1-based `line` (text.size() past the end).
size_t LineStart(std::string_view text, size_t line) {
  size_t pos = 0;
  for (size_t l = 1; l < line && pos < text.size(); ++l) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) return text.size();
    pos = nl + 1;
  }
  return pos;
}

struct DataTableInfo {
  bool present = false;
  bool inline_table = false;
  size_t policy_first_line = 0;  // 0: no cocostorage.toml
  size_t policy_last_line = 0;
};

StatusOr<DataTableInfo> LocateData(std::string_view text) {
  DataTableInfo info;
  try {
    toml::table doc = toml::parse(text);
    toml::table* data = doc["data"].as_table();
    if (data == nullptr) return info;
    info.present = true;
    info.inline_table = data->is_inline();
    for (auto& [k, v] : *data) {
      if (k.str() != kPolicyDataKey) continue;
      info.policy_first_line = k.source().begin.line;
      info.policy_last_line = v.source().end.line;
    }
    return info;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(Cat("init-data is not TOML: ", e.what()));
  }
}

}  // namespace

StatusOr<std::string> AlgorithmForTee(std::string_view tee) {
  if (tee == "snp") return std::string("sha256");
  if (tee == "tdx") return std::string("sha384");
  return absl::InvalidArgumentError(Cat("--tee ", tee, ": want snp or tdx"));
}

StatusOr<std::string> BuildInitData(std::string_view policy_toml, std::string_view algorithm) {
  std::string out = Cat("version = \"0.1.0\"\nalgorithm = \"", algorithm, "\"\n\n[data]\n", PolicyEntry(policy_toml));
  COCO_ASSIGN_OR_RETURN(auto parsed, agent::kbs::ParseInitData(out));
  auto it = parsed.data.find(std::string(kPolicyDataKey));
  if (it == parsed.data.end() || it->second != policy_toml) {
    return absl::InternalError("init-data: the policy does not read back identically");
  }
  return out;
}

StatusOr<std::string> MergeInitData(std::string_view existing, std::string_view policy_toml,
                                    std::optional<std::string> algorithm, bool replace) {
  auto before_or = agent::kbs::ParseInitData(std::string(existing));
  if (!before_or.ok()) return absl::InvalidArgumentError(Cat("--init-data: ", before_or.status().message()));
  const agent::kbs::InitData& before = *before_or;
  if (algorithm.has_value() && *algorithm != before.algorithm) {
    return absl::FailedPreconditionError(Cat("--init-data uses algorithm ", before.algorithm, ", but the TEE needs ",
                                             *algorithm, " (the digest must fill the launch field)"));
  }
  COCO_ASSIGN_OR_RETURN(DataTableInfo info, LocateData(existing));
  if (info.inline_table) {
    return absl::InvalidArgumentError("--init-data: [data] is an inline table; write it as a [data] section");
  }
  std::string text(existing);
  if (info.policy_first_line != 0) {
    if (!replace) {
      return absl::FailedPreconditionError(
          Cat("--init-data already holds \"", kPolicyDataKey, "\"; pass --replace to replace it"));
    }
    const size_t from = LineStart(text, info.policy_first_line);
    const size_t to = LineStart(text, info.policy_last_line + 1);
    text.erase(from, to - from);
  }
  if (!text.empty() && text.back() != '\n') text.push_back('\n');
  if (!info.present) text += "\n[data]\n";
  text += PolicyEntry(policy_toml);

  // What we promise: the other entries (and version, algorithm) unchanged.
  auto after = agent::kbs::ParseInitData(text);
  if (!after.ok()) {
    return absl::InternalError(
        Cat("merged init-data does not parse (", after.status().message(), "); edit the file by hand"));
  }
  auto expected = before.data;
  expected[std::string(kPolicyDataKey)] = std::string(policy_toml);
  if (after->data != expected || after->version != before.version || after->algorithm != before.algorithm) {
    return absl::InternalError("merging into --init-data would change other entries; edit the file by hand");
  }
  return text;
}

StatusOr<std::string> InitDataDigestHex(std::string_view init_data) {
  COCO_ASSIGN_OR_RETURN(auto parsed, agent::kbs::ParseInitData(std::string(init_data)));
  return agent::kbs::DigestHex(parsed);
}

StatusOr<std::string> GzipDeterministic(std::string_view data) {
  z_stream zs;
  std::memset(&zs, 0, sizeof zs);
  // windowBits 15 + 16: a gzip wrapper instead of zlib's.
  if (deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return absl::InternalError("deflateInit2 failed");
  }
  gz_header header;
  std::memset(&header, 0, sizeof header);
  header.time = 0;  // no timestamp, no name: like gzip -n
  header.os = 3;    // Unix, whatever platform builds it
  if (deflateSetHeader(&zs, &header) != Z_OK) {
    deflateEnd(&zs);
    return absl::InternalError("deflateSetHeader failed");
  }
  std::string out(deflateBound(&zs, data.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  const size_t produced = out.size() - zs.avail_out;
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) return absl::InternalError("deflate did not finish");
  out.resize(produced);
  return out;
}

StatusOr<std::string> InitDataAnnotationValue(std::string_view init_data) {
  if (init_data.size() > agent::kbs::kMaxInitDataBytes) {
    return absl::InvalidArgumentError("init-data is larger than 1 MiB");
  }
  COCO_ASSIGN_OR_RETURN(std::string gz, GzipDeterministic(init_data));
  return Base64Encode(gz);
}

}  // namespace cocostorage::policygen
