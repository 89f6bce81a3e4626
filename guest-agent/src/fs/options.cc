#include "fs/options.h"

#include <sys/mount.h>

#include <algorithm>
#include <map>
#include <set>

#include "cocostorage/common/strings.h"
#include "core/text.h"

namespace cocostorage::agent {
namespace {

bool OneOf(const std::string& v, std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (v == a) return true;
  }
  return false;
}

bool Word(std::string_view v, size_t max) {
  return CharsAre(v, 1, max, [](char c) { return IsAlnum(c) || c == '_'; });
}

bool Label(std::string_view v, size_t max) {
  return CharsAre(v, 1, max, [](char c) { return IsAlnum(c) || c == '_' || c == '.' || c == '-'; });
}

// "<prefix><1..max_digits digits>[one of suffixes]"
bool PrefixedDecimal(std::string_view v, std::string_view prefix, size_t max_digits, std::string_view suffixes = "") {
  if (v.substr(0, prefix.size()) != prefix) return false;
  v.remove_prefix(prefix.size());
  if (!v.empty() && suffixes.find(v.back()) != std::string_view::npos) v.remove_suffix(1);
  return IsDecimal(v, max_digits);
}

// "12" or "1.5": the reserved-blocks percentage.
bool Percentage(std::string_view v) {
  auto dot = v.find('.');
  if (dot == std::string_view::npos) return IsDecimal(v, 2);
  return IsDecimal(v.substr(0, dot), 2) && IsDecimal(v.substr(dot + 1), 2);
}

// ext4 features a request may name in -O (add, or remove with '^').
const std::set<std::string>& Ext4Features() {
  static const std::set<std::string> f = {"64bit",         "casefold",      "dir_index",   "dir_nlink", "encrypt",
                                          "ext_attr",      "extent",        "extra_isize", "filetype",  "flex_bg",
                                          "has_journal",   "huge_file",     "inline_data", "large_dir", "large_file",
                                          "metadata_csum", "mmp",           "project",     "quota",     "resize_inode",
                                          "sparse_super",  "sparse_super2", "uninit_bg",   "verity"};
  return f;
}

// Features the agent never lets a request remove: checksums and the on-disk
// format the rest of the stack assumes.
const std::set<std::string>& Ext4RequiredFeatures() {
  static const std::set<std::string> f = {"metadata_csum", "extent", "64bit", "filetype", "ext_attr"};
  return f;
}

// ext4 -O: comma-separated features from the allowlist, each optionally
// negated with '^'.
bool FeatureList(std::string_view v) {
  if (v.empty() || v.size() > 256) return false;
  for (const auto& item : Split(v, ',', false)) {
    std::string_view f = item;
    if (!f.empty() && f.front() == '^') f.remove_prefix(1);
    if (!Ext4Features().count(std::string(f))) return false;
  }
  return true;
}

// "key=value,key=value" where every key is allowed and values are plain tokens.
bool KeyValueList(const std::string& v, const std::set<std::string>& keys) {
  if (v.empty()) return false;
  for (const auto& item : Split(v, ',', false)) {
    auto eq = item.find('=');
    std::string key = item.substr(0, eq);
    if (!keys.count(key)) return false;
    if (eq != std::string::npos && !Word(item.substr(eq + 1), 32)) return false;
  }
  return true;
}

using Validator = bool (*)(const std::string&);

const std::map<std::string, Validator>& Ext4Flags() {
  static const std::map<std::string, Validator> m = {
      {"-b", [](const std::string& v) { return v == "1024" || v == "2048" || v == "4096"; }},
      {"-i", [](const std::string& v) { return CharsAre(v, 4, 9, IsDigit); }},
      {"-I", [](const std::string& v) { return v == "128" || v == "256" || v == "512" || v == "1024"; }},
      {"-m", [](const std::string& v) { return Percentage(v); }},
      {"-N", [](const std::string& v) { return IsDecimal(v, 10); }},
      {"-O", [](const std::string& v) { return FeatureList(v); }},
      {"-E",
       [](const std::string& v) {
         return KeyValueList(v, {"stride", "stripe_width", "stripe-width", "num_backup_sb", "packed_meta_blocks",
                                 "lazy_itable_init", "lazy_journal_init", "nodiscard", "discard"});
       }},
      {"-L", [](const std::string& v) { return Label(v, 16); }},
      {"-T", [](const std::string& v) { return CharsAre(v, 1, 16, [](char c) { return IsLower(c) || IsDigit(c); }); }},
      {"-J", [](const std::string& v) { return PrefixedDecimal(v, "size=", 6); }},
  };
  return m;
}

const std::map<std::string, Validator>& XfsFlags() {
  static const std::map<std::string, Validator> m = {
      {"-b",
       [](const std::string& v) {
         return OneOf(v,
                      {"size=1024", "size=2048", "size=4096", "size=8192", "size=16384", "size=32768", "size=65536"});
       }},
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
      {"-L", [](const std::string& v) { return Label(v, 12); }},
      {"-s",
       [](const std::string& v) {
         return OneOf(v, {"size=512", "size=1024", "size=2048", "size=4096"});
       }},
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
      return absl::InvalidArgumentError(Cat("mkfs option ", Quoted(opt), " is not allowed for ", fs_type));
    }
    if (i + 1 >= options.size()) return absl::InvalidArgumentError(Cat("mkfs option ", opt, " needs a value"));
    const std::string& value = options[++i];
    if (!it->second(value)) {
      return absl::InvalidArgumentError(Cat("mkfs option ", opt, " has a value that is not allowed: ", Quoted(value)));
    }
  }
  return OkStatus();
}

namespace {

// key[=value] items of an -E list, in order, keys unique.
StatusOr<std::vector<std::pair<std::string, std::string>>> ExtendedOptions(const std::vector<std::string>& lists) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& list : lists) {
    for (const auto& item : Split(list, ',')) {
      auto eq = item.find('=');
      std::string key = item.substr(0, eq);
      std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
      // A bare boolean key means "=1" to mke2fs.
      if (value.empty() && (key == "lazy_itable_init" || key == "lazy_journal_init" || key == "packed_meta_blocks"))
        value = "1";
      bool dup = false;
      for (auto& [k, v] : out) {
        if (k != key) continue;
        if (v != value)
          return absl::InvalidArgumentError(Cat("mkfs -E ", key, " is given twice with different values"));
        dup = true;
      }
      if (!dup) out.emplace_back(key, value);
    }
  }
  return out;
}

}  // namespace

StatusOr<std::vector<std::string>> BuildMkfsArgv(const std::string& fs_type,
                                                 const std::vector<std::string>& user_options,
                                                 const std::string& device, const MkfsRules& rules) {
  COCO_RETURN_IF_ERROR(ValidateMkfsOptions(fs_type, user_options));
  // mke2fs and mkfs.xfs keep the last of a repeated flag: a requested -E
  // would silently replace the agent's own. So the agent builds the final
  // argv itself: single-valued flags once, -O and -E merged with what the
  // agent requires, which a request may add to but never remove.
  std::vector<std::string> singles;
  std::vector<std::string> features;  // ext4 -O items
  std::vector<std::string> extended;  // ext4 -E lists
  std::set<std::string> seen;
  for (size_t i = 0; i < user_options.size(); ++i) {
    const std::string& flag = user_options[i];
    if (BareFlags(fs_type).count(flag)) {
      if (seen.insert(flag).second) singles.push_back(flag);
      continue;
    }
    const std::string& value = user_options[++i];
    if (fs_type == "ext4" && flag == "-O") {
      for (const auto& f : Split(value, ',')) features.push_back(f);
      continue;
    }
    if (fs_type == "ext4" && flag == "-E") {
      extended.push_back(value);
      continue;
    }
    if (!seen.insert(flag).second) {
      return absl::InvalidArgumentError(Cat("mkfs option ", flag, " is given twice"));
    }
    if (fs_type == "xfs" && flag == "-m") {
      for (const auto& item : Split(value, ',')) {
        if (item == "crc=0")
          return absl::InvalidArgumentError("mkfs.xfs -m crc=0 (no metadata checksums) is not allowed");
      }
    }
    singles.push_back(flag);
    singles.push_back(value);
  }

  std::vector<std::string> argv;
  if (fs_type == "xfs") {
    // -K: no discard at mkfs (pointless on a fresh volume, and it would pass
    // through to the guard).
    argv = {"mkfs.xfs", "-f", "-q", "-K"};
    // mkfs.xfs always zeroes its log, and sizes it at 1/2048 of the volume
    // above 128 GiB (512 MiB at 1 TiB); with the guard every zeroed block is
    // really written. 64 MiB is mkfs.xfs's own choice up to 128 GiB. A
    // request's log size wins.
    if (rules.guarded) {
      auto l = std::find(singles.begin(), singles.end(), "-l");
      if (l == singles.end()) {
        singles.insert(singles.end(), {"-l", "size=64m"});
      } else {
        bool sized = false;
        for (const auto& item : Split(*(l + 1), ',')) sized = sized || item.rfind("size=", 0) == 0;
        if (!sized) *(l + 1) += ",size=64m";
      }
    }
    argv.insert(argv.end(), singles.begin(), singles.end());
    argv.push_back(device);
    return argv;
  }

  std::vector<std::string> merged_features;
  for (const auto& f : features) {
    const bool remove = !f.empty() && f.front() == '^';
    const std::string name = remove ? f.substr(1) : f;
    if (remove && Ext4RequiredFeatures().count(name)) {
      return absl::InvalidArgumentError(Cat("mkfs -O ^", name, " is not allowed: the agent requires ", name));
    }
    if (remove && name == "has_journal" && !rules.journal_removable) {
      return absl::InvalidArgumentError("mkfs -O ^has_journal is not allowed: this volume needs its journal");
    }
    for (const auto& other : merged_features) {
      const bool other_remove = !other.empty() && other.front() == '^';
      if ((other_remove ? other.substr(1) : other) == name && other_remove != remove) {
        return absl::InvalidArgumentError(Cat("mkfs -O both adds and removes ", name));
      }
    }
    if (std::find(merged_features.begin(), merged_features.end(), f) == merged_features.end()) {
      merged_features.push_back(f);
    }
  }

  // The agent's -E: discard would pass through to the guard and is pointless
  // on a fresh volume; with the guard, unwritten inode tables and journal
  // blocks read as zeros, so zeroing them (time linear in size) buys nothing.
  std::vector<std::pair<std::string, std::string>> required = {{"nodiscard", ""}};
  if (rules.guarded) {
    required.emplace_back("lazy_itable_init", "1");
    required.emplace_back("lazy_journal_init", "1");
  }
  COCO_ASSIGN_OR_RETURN(auto user_ext, ExtendedOptions(extended));
  std::vector<std::string> ext;
  for (const auto& [k, v] : required) ext.push_back(v.empty() ? k : Cat(k, "=", v));
  // With the guard, every dm-thin block the metadata touches is zero-filled
  // once, and the block grows with the volume (64 KiB up to 64 GiB, 1 MiB at
  // 1 TiB). Spread out, flex_bg puts one written bitmap block in each flex
  // group: 512 guard blocks (512 MiB) at 1 TiB. Packed at the start they share
  // a few blocks. A layout preference, not a safety rule: a request's own
  // packed_meta_blocks value wins.
  bool user_packs = false;
  for (const auto& kv : user_ext) user_packs = user_packs || kv.first == "packed_meta_blocks";
  if (rules.guarded && !user_packs) ext.push_back("packed_meta_blocks=1");
  for (const auto& [key, value] : user_ext) {
    if (key == "discard")
      return absl::InvalidArgumentError("mkfs -E discard is not allowed (the agent sets nodiscard)");
    bool is_required = false;
    for (const auto& [rk, rv] : required) {
      if (rk != key) continue;
      is_required = true;
      if (rv != value) {
        return absl::InvalidArgumentError(
            Cat("mkfs -E ", key, "=", value, " conflicts with the agent's required ", rk, rv.empty() ? "" : "=", rv));
      }
    }
    if (!is_required) ext.push_back(value.empty() ? key : Cat(key, "=", value));
  }

  argv = {"mkfs.ext4", "-F", "-q"};
  argv.insert(argv.end(), singles.begin(), singles.end());
  if (!merged_features.empty()) argv.insert(argv.end(), {"-O", Join(merged_features, ",")});
  argv.insert(argv.end(), {"-E", Join(ext, ",")});
  argv.push_back(device);
  return argv;
}

StatusOr<ParsedMountOptions> ParseMountOptions(const std::string& fs_type, const std::vector<std::string>& options,
                                               bool read_only) {
  static const std::map<std::string, unsigned long> kFlags = {
      {"ro", MS_RDONLY},
      {"rw", 0},
      {"noexec", MS_NOEXEC},
      {"exec", 0},
      {"nosuid", MS_NOSUID},
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
  if (options.size() > 32) return absl::InvalidArgumentError("too many mount options");
  ParsedMountOptions out;
  // Device nodes and set-id programs on a pod volume are never legitimate:
  // the host shaped what reaches the disk, and a pod that needs either has no
  // business getting it from a volume. exec stays allowed (workloads run
  // binaries they built or unpacked there).
  out.flags = MS_NODEV | MS_NOSUID;
  if (read_only) out.flags |= MS_RDONLY;
  std::vector<std::string> data;
  for (const auto& opt : options) {
    if (auto it = kFlags.find(opt); it != kFlags.end()) {
      out.flags |= it->second;
      continue;
    }
    const auto& allowed = fs_type == "ext4" ? kExt4Data : kXfsData;
    bool numeric_ok =
        (fs_type == "ext4" && PrefixedDecimal(opt, "commit=", 4)) ||
        (fs_type == "xfs" && (PrefixedDecimal(opt, "logbufs=", 2) || PrefixedDecimal(opt, "logbsize=", 6, "k") ||
                              PrefixedDecimal(opt, "allocsize=", 6, "kmg")));
    if (!allowed.count(opt) && !numeric_ok) {
      return absl::InvalidArgumentError(Cat("mount option ", Quoted(opt), " is not allowed for ", fs_type));
    }
    data.push_back(opt);
  }
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

}  // namespace cocostorage::agent
