#include "backing_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <string_view>

#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::vmtest {
namespace {

template <typename Fn>
void ForEachDataBlock(const std::string& path, Fn fn) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return;
  off_t end = lseek(fd.get(), 0, SEEK_END);
  std::vector<char> buf(1 << 20);
  off_t pos = 0;
  while (pos < end) {
    off_t data = lseek(fd.get(), pos, SEEK_DATA);
    if (data < 0) break;
    off_t hole = lseek(fd.get(), data, SEEK_HOLE);
    if (hole < 0) hole = end;
    data = data / 4096 * 4096;
    for (off_t off = data; off < hole;) {
      size_t want = static_cast<size_t>(std::min<off_t>(static_cast<off_t>(buf.size()), hole - off));
      ssize_t n = pread(fd.get(), buf.data(), want, off);
      if (n <= 0) return;
      for (ssize_t b = 0; b < n; b += 4096) {
        size_t len = static_cast<size_t>(std::min<ssize_t>(4096, n - b));
        fn(static_cast<uint64_t>(off + b), std::string_view(buf.data() + b, len));
      }
      off += n;
    }
    pos = hole;
  }
}

}  // namespace

std::map<uint64_t, uint64_t> BlockHashes(const std::string& path) {
  std::map<uint64_t, uint64_t> out;
  ForEachDataBlock(path, [&](uint64_t off, std::string_view block) {
    if (block.find_first_not_of('\0') != std::string_view::npos) out[off] = std::hash<std::string_view>{}(block);
  });
  return out;
}

std::vector<uint64_t> ChangedBlocks(const std::map<uint64_t, uint64_t>& before,
                                    const std::map<uint64_t, uint64_t>& after) {
  std::vector<uint64_t> changed;
  for (const auto& [off, h] : after) {
    auto it = before.find(off);
    if (it == before.end() || it->second != h) changed.push_back(off);
  }
  return changed;
}

bool FileContains(const std::string& path, const std::string& needle) {
  if (needle.empty()) return true;
  bool found = false;
  std::string carry;
  ForEachDataBlock(path, [&](uint64_t, std::string_view block) {
    if (found) return;
    std::string window = carry + std::string(block);
    if (window.find(needle) != std::string::npos) found = true;
    carry = window.size() >= needle.size() ? window.substr(window.size() - needle.size() + 1) : window;
  });
  return found;
}

Status FlipBytes(const std::string& path, const std::vector<uint64_t>& block_offsets) {
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, Cat("open ", path));
  for (uint64_t off : block_offsets) {
    char c = 0;
    if (pread(fd.get(), &c, 1, static_cast<off_t>(off + 1000)) != 1) return ErrnoStatus(errno, "pread");
    c = static_cast<char>(c ^ 0x5a);
    if (pwrite(fd.get(), &c, 1, static_cast<off_t>(off + 1000)) != 1) return ErrnoStatus(errno, "pwrite");
  }
  if (fsync(fd.get()) != 0) return ErrnoStatus(errno, Cat("fsync ", path));
  return OkStatus();
}

}  // namespace cocostorage::vmtest
