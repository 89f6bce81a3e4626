#include "fs/options.h"

#include <sys/mount.h>

#include <map>
#include <regex>
#include <set>

#include "cocostorage/common/strings.h"

namespace cocostorage::agent {
namespace {

bool Matches(const std::string& v, const char* re) { return std::regex_match(v, std::regex(re)); }

// "key=value,key=value" where every key is allowed and values are plain tokens.
bool KeyValueList(const std::string& v, const std::set<std::string>& keys) {
  if (v.empty()) return false;
  for (const auto& item : Split(v, ',', false)) {
    auto eq = item.find('=');
    std::string key = item.substr(0, eq);
    if (!keys.count(key)) return false;
    if (eq != std::string::npos && !Matches(item.substr(eq + 1), "[A-Za-z0-9_]{1,32}")) return false;
  }
  return true;
}

using Validator = bool (*)(const std::string&);

const std::map<std::string, Validator>& Ext4Flags() {
  static const std::map<std::string, Validator> m = {
      {"-b", [](const std::string& v) { return v == "1024" || v == "2048" || v == "4096"; }},
      {"-i", [](const std::string& v) { return Matches(v, "[0-9]{4,9}"); }},
      {"-I", [](const std::string& v) { return v == "128" || v == "256" || v == "512" || v == "1024"; }},
      {"-m", [](const std::string& v) { return Matches(v, "[0-9]{1,2}(\\.[0-9]{1,2})?"); }},
      {"-N", [](const std::string& v) { return Matches(v, "[0-9]{1,10}"); }},
      {"-O", [](const std::string& v) { return Matches(v, "\\^?[a-z0-9_]+(,\\^?[a-z0-9_]+)*"); }},
      {"-E",
       [](const std::string& v) {
         return KeyValueList(v, {"stride", "stripe_width", "stripe-width", "num_backup_sb", "packed_meta_blocks",
                                 "lazy_itable_init", "lazy_journal_init", "nodiscard", "discard"});
       }},
      {"-L", [](const std::string& v) { return Matches(v, "[A-Za-z0-9_.-]{1,16}"); }},
      {"-T", [](const std::string& v) { return Matches(v, "[a-z0-9]{1,16}"); }},
      {"-J", [](const std::string& v) { return Matches(v, "size=[0-9]{1,6}"); }},
  };
  return m;
}

const std::map<std::string, Validator>& XfsFlags() {
  static const std::map<std::string, Validator> m = {
      {"-b", [](const std::string& v) { return Matches(v, "size=(1024|2048|4096|8192|16384|32768|65536)"); }},
      {"-i",
       [](const std::string& v) {
         return KeyValueList(v, {"size", "maxpct", "align", "sparse", "nrext64"});
       }},
      {"-d",
       [](const std::string& v) {
         return KeyValueList(v, {"agcount", "agsize", "su", "sw", "sunit", "swidth"});
       }},
      {"-l",
       [](const std::string& v) {
         return KeyValueList(v, {"size", "version", "sunit", "su", "lazy-count"});
       }},
      {"-n",
       [](const std::string& v) {
         return KeyValueList(v, {"size", "version", "ftype"});
       }},
      {"-m",
       [](const std::string& v) {
         return KeyValueList(v, {"crc", "finobt", "rmapbt", "reflink", "bigtime", "inobtcount"});
       }},
      {"-L", [](const std::string& v) { return Matches(v, "[A-Za-z0-9_.-]{1,12}"); }},
      {"-s", [](const std::string& v) { return Matches(v, "size=(512|1024|2048|4096)"); }},
  };
  return m;
}

// Flags without a value.
const std::set<std::string>& BareFlags(const std::string& fs_type) {
  static const std::set<std::string> ext4 = {"-j"};
  static const std::set<std::string> none;
  return fs_type == "ext4" ? ext4 : none;
}

}  // namespace

bool IsSupportedFsType(const std::string& fs_type) { return fs_type == "ext4" || fs_type == "xfs"; }
std::vector<std::string> SupportedFsTypes() { return {"ext4", "xfs"}; }

Status ValidateMkfsOptions(const std::string& fs_type, const std::vector<std::string>& options) {
  if (!IsSupportedFsType(fs_type)) return absl::InvalidArgumentError(Cat("unsupported fs type \"", fs_type, "\""));
  const auto& flags = fs_type == "ext4" ? Ext4Flags() : XfsFlags();
  for (size_t i = 0; i < options.size(); ++i) {
    const std::string& opt = options[i];
    if (BareFlags(fs_type).count(opt)) continue;
    auto it = flags.find(opt);
    if (it == flags.end()) {
      return absl::InvalidArgumentError(Cat("mkfs option \"", opt, "\" is not allowed for ", fs_type));
    }
    if (i + 1 >= options.size()) return absl::InvalidArgumentError(Cat("mkfs option ", opt, " needs a value"));
    const std::string& value = options[++i];
    if (!it->second(value)) {
      return absl::InvalidArgumentError(Cat("mkfs option ", opt, " has a value that is not allowed: \"", value, "\""));
    }
  }
  return OkStatus();
}

StatusOr<ParsedMountOptions> ParseMountOptions(const std::string& fs_type, const std::vector<std::string>& options,
                                               bool read_only) {
  static const std::map<std::string, unsigned long> kFlags = {
      {"ro", MS_RDONLY},
      {"rw", 0},
      {"noexec", MS_NOEXEC},
      {"exec", 0},
      {"nosuid", MS_NOSUID},
      {"suid", 0},
      {"nodev", MS_NODEV},
      {"noatime", MS_NOATIME},
      {"relatime", MS_RELATIME},
      {"strictatime", MS_STRICTATIME},
      {"nodiratime", MS_NODIRATIME},
      {"sync", MS_SYNCHRONOUS},
      {"dirsync", MS_DIRSYNC},
      {"lazytime", MS_LAZYTIME},
      {"defaults", 0},
  };
  static const std::set<std::string> kExt4Data = {
      "discard",        "nodiscard",         "noinit_itable",   "init_itable", "data=ordered",
      "data=writeback", "errors=remount-ro", "errors=continue", "nodelalloc",  "delalloc"};
  static const std::set<std::string> kXfsData = {"discard", "nodiscard", "inode64",  "inode32",  "largeio", "nolargeio",
                                                 "noquota", "usrquota",  "grpquota", "prjquota", "attr2",   "noattr2"};
  ParsedMountOptions out;
  // Device nodes on a pod volume are never legitimate.
  out.flags = MS_NODEV;
  if (read_only) out.flags |= MS_RDONLY;
  std::vector<std::string> data;
  for (const auto& opt : options) {
    if (auto it = kFlags.find(opt); it != kFlags.end()) {
      out.flags |= it->second;
      continue;
    }
    const auto& allowed = fs_type == "ext4" ? kExt4Data : kXfsData;
    bool numeric_ok =
        (fs_type == "ext4" && Matches(opt, "commit=[0-9]{1,4}")) ||
        (fs_type == "xfs" && Matches(opt, "(logbufs=[0-9]{1,2}|logbsize=[0-9]{1,6}k?|allocsize=[0-9]{1,6}[kmg]?)"));
    if (!allowed.count(opt) && !numeric_ok) {
      return absl::InvalidArgumentError(Cat("mount option \"", opt, "\" is not allowed for ", fs_type));
    }
    data.push_back(opt);
  }
  if (options.size() > 32) return absl::InvalidArgumentError("too many mount options");
  if ((out.flags & MS_RDONLY) && std::find(options.begin(), options.end(), "rw") != options.end()) {
    return absl::InvalidArgumentError("mount options ask for both ro and rw");
  }
  out.data = Join(data, ",");
  return out;
}

std::string MountDataFor(const std::string& fs_type, const std::string& data, bool guarded) {
  // With the guard, unwritten inode tables already read as zeros: ext4's
  // background zeroing thread would only burn I/O. An explicit
  // init_itable/noinit_itable from the request wins.
  if (fs_type != "ext4" || !guarded || data.find("init_itable") != std::string::npos) return data;
  return data.empty() ? "noinit_itable" : Cat(data, ",noinit_itable");
}

std::vector<std::string> BuildMkfsArgv(const std::string& fs_type, const std::vector<std::string>& user_options,
                                       const std::string& device, bool guarded) {
  std::vector<std::string> argv;
  if (fs_type == "ext4") {
    argv = {"mkfs.ext4", "-F", "-q"};
    // Discard would pass through to the guard and is pointless on a fresh volume.
    // With the guard, unwritten inode tables and journal blocks read as zeros,
    // so zeroing them (time linear in size) buys nothing.
    argv.insert(argv.end(), {"-E", guarded ? "nodiscard,lazy_itable_init=1,lazy_journal_init=1" : "nodiscard"});
  } else {
    argv = {"mkfs.xfs", "-f", "-q", "-K"};
  }
  argv.insert(argv.end(), user_options.begin(), user_options.end());
  argv.push_back(device);
  return argv;
}

}  // namespace cocostorage::agent
