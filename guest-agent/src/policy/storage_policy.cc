#include "policy/storage_policy.h"

#include <toml++/toml.h>

#include <algorithm>
#include <exception>
#include <initializer_list>
#include <limits>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "core/text.h"

namespace cocostorage::agent::policy {
namespace {

constexpr std::string_view kIntegrityChoices = "hmac-sha256, aegis128, aes-gcm, none";
constexpr std::string_view kRouteChoices = "secure-mount, kata-storage, agent-api";
constexpr Origin kOrigins[] = {Origin::kSecureMount, Origin::kKataStorage, Origin::kAgentApi};

// `msg`: any string type Cat takes (absl's Status::message() is absl::string_view).
template <typename Msg>
Status Bad(std::string_view path, const Msg& msg) {
  return absl::InvalidArgumentError(Cat(path, ": ", msg));
}

const char* TypeName(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      return "a date/time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

Status WrongType(std::string_view path, std::string_view want, const toml::node& got) {
  return Bad(path, Cat("expected ", want, ", got ", TypeName(got)));
}

// Option words become argv entries and mount data: no control bytes.
bool Printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u != 0x7f;
  });
}

// One TOML table of the document and its key path in messages ("volume[pgdata]").
class Table {
 public:
  Table(const toml::table& t, std::string prefix) : t_(t), prefix_(std::move(prefix)) {}

  std::string Path(std::string_view key) const { return prefix_.empty() ? std::string(key) : Cat(prefix_, ".", key); }
  bool Has(std::string_view key) const { return t_.get(key) != nullptr; }

  Status CheckKeys(std::initializer_list<std::string_view> known) const {
    for (const auto& [key, node] : t_) {
      const std::string_view k = key.str();
      if (std::find(known.begin(), known.end(), k) == known.end()) return Bad(Path(Quoted(k, 64)), "unknown key");
    }
    return OkStatus();
  }

  // Each getter leaves *out alone when the key is absent and not required.
  Status GetString(std::string_view key, bool required, std::string* out) const {
    const toml::node* n = t_.get(key);
    if (n == nullptr) return required ? Bad(Path(key), "required") : OkStatus();
    if (!n->is_string()) return WrongType(Path(key), "a string", *n);
    COCO_RETURN_IF_ERROR(CheckString(Path(key), n->as_string()->get()));
    *out = n->as_string()->get();
    return OkStatus();
  }

  Status GetUint(std::string_view key, bool required, uint64_t min, uint64_t max, uint64_t* out) const {
    const toml::node* n = t_.get(key);
    if (n == nullptr) return required ? Bad(Path(key), "required") : OkStatus();
    if (!n->is_integer()) return WrongType(Path(key), "an integer", *n);
    const int64_t v = n->as_integer()->get();
    if (v < 0 || static_cast<uint64_t>(v) < min || static_cast<uint64_t>(v) > max) {
      return Bad(Path(key), Cat(v, " is out of range [", min, ", ", max, "]"));
    }
    *out = static_cast<uint64_t>(v);
    return OkStatus();
  }

  Status GetBool(std::string_view key, bool* out) const {
    const toml::node* n = t_.get(key);
    if (n == nullptr) return OkStatus();
    if (!n->is_boolean()) return WrongType(Path(key), "a boolean", *n);
    *out = n->as_boolean()->get();
    return OkStatus();
  }

  Status GetStringList(std::string_view key, bool required, std::vector<std::string>* out) const {
    const toml::node* n = t_.get(key);
    if (n == nullptr) return required ? Bad(Path(key), "required") : OkStatus();
    if (!n->is_array()) return WrongType(Path(key), "an array of strings", *n);
    const toml::array& a = *n->as_array();
    if (a.size() > kMaxListItems) return Bad(Path(key), Cat(a.size(), " items; at most ", kMaxListItems));
    std::vector<std::string> items;
    for (size_t i = 0; i < a.size(); ++i) {
      const std::string at = Cat(Path(key), "[", i, "]");
      if (!a[i].is_string()) return WrongType(at, "a string", a[i]);
      COCO_RETURN_IF_ERROR(CheckString(at, a[i].as_string()->get()));
      items.push_back(a[i].as_string()->get());
    }
    *out = std::move(items);
    return OkStatus();
  }

  // A TOML integer of bytes, or a string for ParseSize.
  Status GetSize(std::string_view key, bool required, uint64_t* out) const {
    const toml::node* n = t_.get(key);
    if (n == nullptr) return required ? Bad(Path(key), "required") : OkStatus();
    if (n->is_integer()) {
      const int64_t v = n->as_integer()->get();
      if (v < 0) return Bad(Path(key), Cat(v, " is negative"));
      *out = static_cast<uint64_t>(v);
      return OkStatus();
    }
    if (!n->is_string()) return WrongType(Path(key), "a size (integer bytes or a string like \"16Gi\")", *n);
    COCO_RETURN_IF_ERROR(CheckString(Path(key), n->as_string()->get()));
    auto size = ParseSize(n->as_string()->get());
    if (!size.ok()) return Bad(Path(key), size.status().message());
    *out = *size;
    return OkStatus();
  }

 private:
  static Status CheckString(std::string_view path, std::string_view s) {
    if (s.size() > kMaxStringBytes) return Bad(path, Cat(s.size(), " bytes; at most ", kMaxStringBytes));
    return OkStatus();
  }

  const toml::table& t_;
  std::string prefix_;
};

StatusOr<const toml::table*> SubTable(const toml::table& doc, std::string_view key) {
  const toml::node* n = doc.get(key);
  if (n == nullptr) return nullptr;
  if (!n->is_table()) return WrongType(key, "a table", *n);
  return n->as_table();
}

template <typename T, typename Name>
Status ParseChoice(const Table& t, std::string_view key, std::initializer_list<T> choices, Name name, T* out) {
  std::string text;
  if (!t.Has(key)) return OkStatus();
  COCO_RETURN_IF_ERROR(t.GetString(key, true, &text));
  std::vector<std::string> names;
  for (T c : choices) {
    if (text == name(c)) {
      *out = c;
      return OkStatus();
    }
    names.push_back(name(c));
  }
  return Bad(t.Path(key), Cat(Quoted(text), " is not one of ", Join(names, ", ")));
}

Status CheckNoDuplicates(const Table& t, std::string_view key, const std::vector<std::string>& items) {
  for (size_t i = 0; i < items.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (items[i] == items[j]) return Bad(t.Path(key), Cat(Quoted(items[i]), " is listed twice"));
    }
  }
  return OkStatus();
}

Status CheckOptionWords(const Table& t, std::string_view key, const std::vector<std::string>& words) {
  for (size_t i = 0; i < words.size(); ++i) {
    if (words[i].empty() || !Printable(words[i])) {
      return Bad(Cat(t.Path(key), "[", i, "]"), Cat(Quoted(words[i]), " is not a printable, non-empty word"));
    }
  }
  return OkStatus();
}

StatusOr<VolumeRule> ParseVolume(const toml::table& tt, size_t index) {
  VolumeRule v;
  // The id names the volume in every later message, once it is known valid.
  COCO_RETURN_IF_ERROR(Table(tt, Cat("volume[", index, "]")).GetString("id", true, &v.id));
  if (Status s = ValidateVolumeId(v.id); !s.ok()) return Bad(Cat("volume[", index, "].id"), s.message());
  const Table t(tt, Cat("volume[", v.id, "]"));
  COCO_RETURN_IF_ERROR(
      t.CheckKeys({"id", "kind", "key", "create", "blank_check", "integrity", "mode", "fs_type", "mkfs_options",
                   "mount_options", "read_only", "min_size", "max_size", "routes", "container_path"}));

  if (!t.Has("kind")) return Bad(t.Path("kind"), "required");
  COCO_RETURN_IF_ERROR(
      ParseChoice(t, "kind", {VolumeKind::kEphemeral, VolumeKind::kPersistent}, VolumeKindName, &v.kind));
  const bool persistent = v.kind == VolumeKind::kPersistent;

  std::string key;
  COCO_RETURN_IF_ERROR(t.GetString("key", true, &key));
  auto source = KeySource::Parse(key);
  if (!source.ok()) return Bad(t.Path("key"), source.status().message());
  v.key = *source;
  if (!persistent && !v.key.ephemeral()) {
    return Bad(t.Path("key"), "an ephemeral volume takes key \"ephemeral\", not a KBS resource");
  }
  if (persistent && v.key.ephemeral()) {
    return Bad(t.Path("key"), "a persistent volume needs a kbs:///<repo>/<type>/<tag> key");
  }

  for (std::string_view only : {"create", "blank_check"}) {
    if (!persistent && t.Has(only)) return Bad(t.Path(only), "only persistent volumes take this key");
  }
  COCO_RETURN_IF_ERROR(ParseChoice(t, "create", {CreateRule::kNever, CreateRule::kIfBlank}, CreateRuleName, &v.create));
  COCO_RETURN_IF_ERROR(
      ParseChoice(t, "blank_check", {BlankCheck::kStructural, BlankCheck::kFull}, BlankCheckName, &v.blank_check));

  std::vector<std::string> integrity;
  COCO_RETURN_IF_ERROR(t.GetStringList("integrity", true, &integrity));
  if (integrity.empty()) return Bad(t.Path("integrity"), Cat("empty; name at least one of ", kIntegrityChoices));
  COCO_RETURN_IF_ERROR(CheckNoDuplicates(t, "integrity", integrity));
  for (const auto& name : integrity) {
    auto mode = ParseIntegrityName(name);
    if (!mode.ok()) return Bad(t.Path("integrity"), Cat(Quoted(name), " is not one of ", kIntegrityChoices));
    v.integrity.push_back(*mode);
  }
  // The mode is fixed in the on-disk format when the volume is created.
  if (persistent && v.integrity.size() != 1) {
    return Bad(t.Path("integrity"), Cat("a persistent volume takes exactly one mode, not ", v.integrity.size()));
  }

  std::string mode;
  COCO_RETURN_IF_ERROR(t.GetString("mode", true, &mode));
  if (mode != "filesystem" && mode != "block") {
    return Bad(t.Path("mode"), Cat(Quoted(mode), " is not one of filesystem, block"));
  }
  v.block_mode = mode == "block";
  if (v.block_mode) {
    for (std::string_view fs_key : {"fs_type", "mkfs_options", "mount_options"}) {
      if (t.Has(fs_key)) return Bad(t.Path(fs_key), "block volumes take no filesystem settings");
    }
  } else {
    COCO_RETURN_IF_ERROR(t.GetString("fs_type", true, &v.fs_type));
    if (v.fs_type != "ext4" && v.fs_type != "xfs") {
      return Bad(t.Path("fs_type"), Cat(Quoted(v.fs_type), " is not one of ext4, xfs"));
    }
    COCO_RETURN_IF_ERROR(t.GetStringList("mkfs_options", false, &v.mkfs_options));
    COCO_RETURN_IF_ERROR(CheckOptionWords(t, "mkfs_options", v.mkfs_options));
    COCO_RETURN_IF_ERROR(t.GetStringList("mount_options", false, &v.mount_options));
    COCO_RETURN_IF_ERROR(CheckOptionWords(t, "mount_options", v.mount_options));
    COCO_RETURN_IF_ERROR(CheckNoDuplicates(t, "mount_options", v.mount_options));
  }
  COCO_RETURN_IF_ERROR(t.GetBool("read_only", &v.read_only));

  COCO_RETURN_IF_ERROR(t.GetSize("min_size", false, &v.min_size_bytes));
  COCO_RETURN_IF_ERROR(t.GetSize("max_size", true, &v.max_size_bytes));
  if (v.max_size_bytes == 0) return Bad(t.Path("max_size"), "must be greater than 0");
  if (v.min_size_bytes > v.max_size_bytes) {
    return Bad(t.Path("min_size"),
               Cat(FormatSize(v.min_size_bytes), " is larger than max_size ", FormatSize(v.max_size_bytes)));
  }

  std::vector<std::string> routes;
  COCO_RETURN_IF_ERROR(t.GetStringList("routes", true, &routes));
  if (routes.empty()) return Bad(t.Path("routes"), Cat("empty; name at least one of ", kRouteChoices));
  COCO_RETURN_IF_ERROR(CheckNoDuplicates(t, "routes", routes));
  for (const auto& name : routes) {
    const auto* it =
        std::find_if(std::begin(kOrigins), std::end(kOrigins), [&](Origin o) { return name == OriginName(o); });
    if (it == std::end(kOrigins)) return Bad(t.Path("routes"), Cat(Quoted(name), " is not one of ", kRouteChoices));
    v.routes.push_back(*it);
  }

  if (t.Has("container_path")) {
    COCO_RETURN_IF_ERROR(t.GetString("container_path", true, &v.container_path));
    auto normal = NormalizeAbsolutePath(v.container_path);
    // The generator compares it with OCI mount destinations byte for byte.
    if (!normal.ok() || *normal != v.container_path || !Printable(v.container_path)) {
      return Bad(t.Path("container_path"), Cat(Quoted(v.container_path), " is not a normalized absolute path"));
    }
  }
  return v;
}

StatusOr<StoragePolicy> ParseDocument(const toml::table& doc) {
  StoragePolicy p;
  const Table top(doc, "");
  COCO_RETURN_IF_ERROR(
      top.CheckKeys({"schema", "schema_version", "policy_version", "workload", "limits", "secure_mount", "volume"}));

  std::string schema;
  COCO_RETURN_IF_ERROR(top.GetString("schema", true, &schema));
  if (schema != kSchemaName) return Bad("schema", Cat(Quoted(schema), " is not \"", kSchemaName, "\""));
  uint64_t number = 0;
  COCO_RETURN_IF_ERROR(top.GetUint("schema_version", true, 0, std::numeric_limits<uint32_t>::max(), &number));
  if (number != kSchemaVersion) {
    return Bad("schema_version", Cat(number, " is not a version this agent knows (", kSchemaVersion, ")"));
  }
  p.schema_version = kSchemaVersion;
  COCO_RETURN_IF_ERROR(top.GetUint("policy_version", true, 1, std::numeric_limits<uint32_t>::max(), &number));
  p.policy_version = static_cast<uint32_t>(number);
  COCO_RETURN_IF_ERROR(top.GetString("workload", false, &p.workload));

  // Volumes first: [limits] defaults to and [secure_mount] refers to them.
  if (const toml::node* n = doc.get("volume")) {
    if (!n->is_array()) return WrongType("volume", "an array of tables ([[volume]])", *n);
    const toml::array& a = *n->as_array();
    if (a.size() > kMaxVolumes) return Bad("volume", Cat(a.size(), " volumes; at most ", kMaxVolumes));
    for (size_t i = 0; i < a.size(); ++i) {
      if (!a[i].is_table()) return WrongType(Cat("volume[", i, "]"), "a table", a[i]);
      COCO_ASSIGN_OR_RETURN(VolumeRule v, ParseVolume(*a[i].as_table(), i));
      if (p.Find(v.id) != nullptr) return Bad(Cat("volume[", i, "].id"), Cat(Quoted(v.id), " is declared twice"));
      p.volumes.push_back(std::move(v));
    }
  }

  const auto ephemeral_rules = std::count_if(p.volumes.begin(), p.volumes.end(),
                                             [](const VolumeRule& v) { return v.kind == VolumeKind::kEphemeral; });
  p.max_ephemeral_volumes = static_cast<uint32_t>(ephemeral_rules);
  COCO_ASSIGN_OR_RETURN(const toml::table* limits, SubTable(doc, "limits"));
  if (limits != nullptr) {
    const Table t(*limits, "limits");
    COCO_RETURN_IF_ERROR(t.CheckKeys({"max_ephemeral_volumes"}));
    number = p.max_ephemeral_volumes;
    COCO_RETURN_IF_ERROR(t.GetUint("max_ephemeral_volumes", false, 0, std::numeric_limits<uint32_t>::max(), &number));
    p.max_ephemeral_volumes = static_cast<uint32_t>(number);
  }

  COCO_ASSIGN_OR_RETURN(const toml::table* secure_mount, SubTable(doc, "secure_mount"));
  if (secure_mount != nullptr) {
    const Table t(*secure_mount, "secure_mount");
    COCO_RETURN_IF_ERROR(t.CheckKeys({"blank_device"}));
    std::string blank = "deny";
    COCO_RETURN_IF_ERROR(t.GetString("blank_device", false, &blank));
    if (blank == "deny") {
      p.secure_mount_blank_device = {BlankDeviceRule::Kind::kDeny, ""};
    } else if (blank == "ephemeral") {
      p.secure_mount_blank_device = {BlankDeviceRule::Kind::kEphemeral, ""};
    } else {
      const VolumeRule* v = p.Find(blank);
      if (v == nullptr) {
        return Bad(t.Path("blank_device"), Cat(Quoted(blank), " is not \"deny\", \"ephemeral\" or a declared volume"));
      }
      if (v->kind != VolumeKind::kPersistent) {
        return Bad(t.Path("blank_device"), Cat(Quoted(blank), " is not a persistent volume"));
      }
      p.secure_mount_blank_device = {BlankDeviceRule::Kind::kVolume, blank};
    }
  }
  return p;
}

// TOML basic string: quotes, backslashes and control bytes escaped; other
// bytes as they are (parsed strings are valid UTF-8).
std::string TomlString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\u{:04X}", u);
    } else {
      out.push_back(c);
    }
  }
  return out + "\"";
}

std::string TomlList(const std::vector<std::string>& items) {
  std::vector<std::string> quoted;
  for (const auto& i : items) quoted.push_back(TomlString(i));
  return Cat("[", Join(quoted, ", "), "]");
}

}  // namespace

const char* VolumeKindName(VolumeKind k) { return k == VolumeKind::kPersistent ? "persistent" : "ephemeral"; }
const char* CreateRuleName(CreateRule c) { return c == CreateRule::kIfBlank ? "if-blank" : "never"; }
const char* BlankCheckName(BlankCheck b) { return b == BlankCheck::kFull ? "full" : "structural"; }

const VolumeRule* StoragePolicy::Find(std::string_view id) const {
  for (const auto& v : volumes) {
    if (v.id == id) return &v;
  }
  return nullptr;
}

StatusOr<StoragePolicy> ParseStoragePolicy(std::string_view toml_text) {
  if (toml_text.size() > kMaxPolicyBytes) {
    return absl::InvalidArgumentError(Cat("storage policy is ", toml_text.size(), " bytes; at most ", kMaxPolicyBytes));
  }
  toml::table doc;
  try {
    doc = toml::parse(toml_text);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(
        Cat("storage policy is not TOML: ", e.description(), " at line ", e.source().begin.line));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(Cat("storage policy is not TOML: ", e.what()));
  }
  return ParseDocument(doc);
}

// Writes what the schema lets a policy say: keys a rule's kind or mode
// forbids are left out, so only a policy ParseStoragePolicy could have
// produced round-trips (e.g. an ephemeral rule's `create` is dropped).
std::string SerializeStoragePolicy(const StoragePolicy& p) {
  std::string out;
  auto line = [&](std::string_view key, std::string_view value) { out += Cat(key, " = ", value, "\n"); };
  line("schema", TomlString(kSchemaName));
  line("schema_version", Cat(p.schema_version));
  line("policy_version", Cat(p.policy_version));
  line("workload", TomlString(p.workload));
  out += "\n[limits]\n";
  line("max_ephemeral_volumes", Cat(p.max_ephemeral_volumes));
  out += "\n[secure_mount]\n";
  switch (p.secure_mount_blank_device.kind) {
    case BlankDeviceRule::Kind::kDeny:
      line("blank_device", "\"deny\"");
      break;
    case BlankDeviceRule::Kind::kEphemeral:
      line("blank_device", "\"ephemeral\"");
      break;
    case BlankDeviceRule::Kind::kVolume:
      line("blank_device", TomlString(p.secure_mount_blank_device.volume_id));
      break;
  }
  for (const VolumeRule& v : p.volumes) {
    const bool persistent = v.kind == VolumeKind::kPersistent;
    out += "\n[[volume]]\n";
    line("id", TomlString(v.id));
    line("kind", TomlString(VolumeKindName(v.kind)));
    line("key", TomlString(v.key.ToString()));
    if (persistent) {
      line("create", TomlString(CreateRuleName(v.create)));
      line("blank_check", TomlString(BlankCheckName(v.blank_check)));
    }
    std::vector<std::string> integrity;
    for (IntegrityMode m : v.integrity) integrity.push_back(IntegrityName(m));
    line("integrity", TomlList(integrity));
    line("mode", v.block_mode ? "\"block\"" : "\"filesystem\"");
    if (!v.block_mode) {
      line("fs_type", TomlString(v.fs_type));
      line("mkfs_options", TomlList(v.mkfs_options));
      line("mount_options", TomlList(v.mount_options));
    }
    line("read_only", v.read_only ? "true" : "false");
    line("min_size", TomlString(FormatSize(v.min_size_bytes)));
    line("max_size", TomlString(FormatSize(v.max_size_bytes)));
    std::vector<std::string> routes;
    for (Origin o : v.routes) routes.push_back(OriginName(o));
    line("routes", TomlList(routes));
    if (!v.container_path.empty()) line("container_path", TomlString(v.container_path));
  }
  return out;
}

StatusOr<uint64_t> ParseSize(std::string_view text) {
  struct Suffix {
    std::string_view name;
    unsigned shift;
  };
  constexpr Suffix kSuffixes[] = {{"Ki", 10}, {"Mi", 20}, {"Gi", 30}, {"Ti", 40}};
  auto bad = [&] {
    return absl::InvalidArgumentError(
        Cat(Quoted(text, 32), " is not a size (a number of bytes, or a number with Ki, Mi, Gi or Ti)"));
  };
  std::string_view digits = text;
  unsigned shift = 0;
  for (const Suffix& s : kSuffixes) {
    if (digits.size() > s.name.size() && digits.substr(digits.size() - s.name.size()) == s.name) {
      digits.remove_suffix(s.name.size());
      shift = s.shift;
      break;
    }
  }
  if (!IsDecimal(digits, 20)) return bad();
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  uint64_t value = 0;
  for (char c : digits) {
    const auto d = static_cast<uint64_t>(c - '0');
    if (value > (kMax - d) / 10) return absl::InvalidArgumentError(Cat(Quoted(text, 32), " does not fit 64 bits"));
    value = value * 10 + d;
  }
  if (value > (kMax >> shift)) return absl::InvalidArgumentError(Cat(Quoted(text, 32), " does not fit 64 bits"));
  return value << shift;
}

std::string FormatSize(uint64_t bytes) {
  constexpr std::pair<unsigned, std::string_view> kSuffixes[] = {{40, "Ti"}, {30, "Gi"}, {20, "Mi"}, {10, "Ki"}};
  if (bytes != 0) {
    for (const auto& [shift, name] : kSuffixes) {
      if (bytes % (uint64_t{1} << shift) == 0) return Cat(bytes >> shift, name);
    }
  }
  return Cat(bytes);
}

}  // namespace cocostorage::agent::policy
