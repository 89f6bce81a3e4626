// coco-crash-writer: the guest side of the power-cut test (tests/kbs/crash_vm_test.cc).
//
//   coco-crash-writer write DIR RUN SYNC_EVERY RECORDS_PER_FILE
//     Appends records 0, 1, 2, ... to DIR/f-00000, DIR/f-00001, ...
//     (RECORDS_PER_FILE each) until killed. After every SYNC_EVERY records it
//     fsyncs the file (and DIR, when it gained a file) and only then writes
//     "crashw run=RUN durable=SEQ" to /dev/console: SEQ and every record before
//     it are on stable storage as far as the guest kernel knows.
//   coco-crash-writer verify DIR RUN RECORDS_PER_FILE ACKED
//     Reads every record file of DIR and prints one summary line
//     "crashw-verify run=RUN ok=0|1 records=N valid=V zero=Z partial=P bad=B
//      first_not_valid=S acked=ACKED bytes=BYTES [problem=...]".
//     ok=1 iff every record <= ACKED is valid and no 4 KiB page anywhere holds
//     bytes other than its expected content or zeros (ACKED -1: none acked).
//
// A record is RECORD_BYTES (64 KiB) of 16 pages; page p of record s of run r is
// a 32-byte header (magic, r, s, p) and xorshift bytes seeded by (r, s, p), so
// a page that is stale, misplaced, from another run or torn never matches.
// After an acknowledged seq, un-fsynced records may be valid, zero (allocated
// but not written back when the power went) or partial (some pages written);
// they must still read without error. Test-only; the image builder adds it.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr size_t kPageBytes = 4096;
constexpr size_t kPagesPerRecord = 16;
constexpr size_t kRecordBytes = kPageBytes * kPagesPerRecord;
constexpr char kMagic[8] = {'C', 'R', 'A', 'S', 'H', 'W', '0', '1'};

void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void FillPage(uint8_t* page, uint64_t run, uint64_t seq, uint64_t index) {
  std::memcpy(page, kMagic, sizeof kMagic);
  Put64(page + 8, run);
  Put64(page + 16, seq);
  Put64(page + 24, index);
  uint64_t x = (run * 0x9e3779b97f4a7c15ull) ^ (seq * 0xbf58476d1ce4e5b9ull) ^ (index + 1) * 0x94d049bb133111ebull;
  if (x == 0) x = 1;
  for (size_t off = 32; off < kPageBytes; off += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    Put64(page + off, x);
  }
}

void FillRecord(uint8_t* rec, uint64_t run, uint64_t seq) {
  for (size_t p = 0; p < kPagesPerRecord; ++p) FillPage(rec + p * kPageBytes, run, seq, p);
}

std::string FileName(const std::string& dir, uint64_t index) {
  char name[32];
  std::snprintf(name, sizeof name, "/f-%05llu", static_cast<unsigned long long>(index));
  return dir + name;
}

// The writer's console, once open: a writer that stops before the kill says
// so there ("crashw run=R stopped: ..."), so the host can tell a cut writer
// from one that had already failed (a full volume, an I/O error).
int g_console = -1;
unsigned long long g_run = 0;

[[noreturn]] void Die(const char* what, const std::string& arg) {
  const int err = errno;
  std::fprintf(stderr, "coco-crash-writer: %s %s: %s\n", what, arg.c_str(), std::strerror(err));
  if (g_console >= 0) {
    char line[256];
    int n = std::snprintf(line, sizeof line, "crashw run=%llu stopped: %s %s: %s\n", g_run, what, arg.c_str(),
                          std::strerror(err));
    if (n > 0) (void)!::write(g_console, line, std::min(static_cast<size_t>(n), sizeof line - 1));
  }
  std::exit(2);
}

bool WriteAll(int fd, const uint8_t* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

int Write(const std::string& dir, uint64_t run, uint64_t sync_every, uint64_t per_file) {
  if (sync_every == 0 || per_file == 0 || per_file % sync_every != 0) {
    std::fprintf(stderr, "coco-crash-writer: RECORDS_PER_FILE must be a multiple of SYNC_EVERY\n");
    return 2;
  }
  int console = ::open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (console < 0) Die("opening", "/dev/console");
  g_console = console;
  g_run = run;
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) Die("creating", dir);
  {
    // DIR's own entry is durable before anything in it is acknowledged.
    const std::string parent = dir.substr(0, dir.find_last_of('/') == std::string::npos ? 1 : dir.find_last_of('/'));
    int parent_fd = ::open(parent.empty() ? "/" : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parent_fd < 0 || ::fsync(parent_fd) != 0) Die("fsync", parent);
    ::close(parent_fd);
  }
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) Die("opening", dir);
  std::vector<uint8_t> rec(kRecordBytes);
  int fd = -1;
  bool dir_dirty = true;
  for (uint64_t seq = 0;; ++seq) {
    if (seq % per_file == 0) {
      // The previous file was fsynced at its last record (per_file is a
      // multiple of sync_every).
      if (fd >= 0) ::close(fd);
      const std::string name = FileName(dir, seq / per_file);
      fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
      if (fd < 0) Die("creating", name);
      dir_dirty = true;
    }
    FillRecord(rec.data(), run, seq);
    if (!WriteAll(fd, rec.data(), rec.size())) Die("writing", FileName(dir, seq / per_file));
    if ((seq + 1) % sync_every != 0) continue;
    if (::fsync(fd) != 0) Die("fsync", FileName(dir, seq / per_file));
    if (dir_dirty) {
      if (::fsync(dir_fd) != 0) Die("fsync", dir);
      dir_dirty = false;
    }
    char line[96];
    int n = std::snprintf(line, sizeof line, "crashw run=%llu durable=%llu\n", static_cast<unsigned long long>(run),
                          static_cast<unsigned long long>(seq));
    if (!WriteAll(console, reinterpret_cast<const uint8_t*>(line), static_cast<size_t>(n))) Die("writing", "console");
  }
}

int Verify(const std::string& dir, uint64_t run, uint64_t per_file, long long acked) {
  std::vector<std::string> files;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (std::strncmp(e->d_name, "f-", 2) == 0) files.push_back(e->d_name);
    }
    ::closedir(d);
  } else if (errno != ENOENT) {
    Die("listing", dir);
  }
  std::sort(files.begin(), files.end());
  uint64_t records = 0, valid = 0, zero = 0, partial = 0, bad = 0, bytes = 0;
  long long first_not_valid = -1;
  std::string problem;
  std::vector<uint8_t> want(kPageBytes), got(kRecordBytes);
  const std::vector<uint8_t> zeros(kPageBytes, 0);
  for (size_t fi = 0; fi < files.size(); ++fi) {
    const std::string path = dir + "/" + files[fi];
    if (path != FileName(dir, fi)) {
      problem = "file_gap:" + files[fi];
      break;
    }
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) Die("opening", path);
    struct stat st {};
    if (::fstat(fd, &st) != 0) Die("stat", path);
    // A size inside a record (writeback is page by page) counts that record.
    const uint64_t n = (static_cast<uint64_t>(st.st_size) + kRecordBytes - 1) / kRecordBytes;
    for (uint64_t r = 0; r < n; ++r) {
      const uint64_t seq = fi * per_file + r;
      size_t have = 0;
      while (have < kRecordBytes) {
        ssize_t k = ::pread(fd, got.data() + have, kRecordBytes - have, static_cast<off_t>(r * kRecordBytes + have));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
          std::printf("crashw-verify run=%llu ok=0 problem=read_error:%s@%llu errno=%d\n",
                      static_cast<unsigned long long>(run), files[fi].c_str(), static_cast<unsigned long long>(r),
                      errno);
          return 1;
        }
        if (k == 0) break;
        have += static_cast<size_t>(k);
      }
      bytes += have;
      size_t good_pages = 0, absent_pages = 0;  // absent: zeros, or past the end of the file
      for (size_t p = 0; p < kPagesPerRecord; ++p) {
        const size_t in_file = have > p * kPageBytes ? std::min(kPageBytes, have - p * kPageBytes) : 0;
        FillPage(want.data(), run, seq, p);
        const uint8_t* page = got.data() + p * kPageBytes;
        if (std::memcmp(page, want.data(), in_file) == 0) {
          // Whole, or cut short by the end of the file.
          if (in_file == kPageBytes) {
            ++good_pages;
          } else {
            ++absent_pages;
          }
        } else if (std::memcmp(page, zeros.data(), in_file) == 0) {
          ++absent_pages;
        }
      }
      ++records;
      if (good_pages == kPagesPerRecord) {
        ++valid;
        continue;
      }
      if (first_not_valid < 0) first_not_valid = static_cast<long long>(seq);
      if (good_pages + absent_pages != kPagesPerRecord) {
        ++bad;  // bytes that are neither ours nor zero: never acceptable
        if (problem.empty()) problem = "garbage_at_seq:" + std::to_string(seq);
      } else if (good_pages == 0) {
        ++zero;
      } else {
        ++partial;
      }
      if (static_cast<long long>(seq) <= acked && problem.empty()) problem = "acked_not_valid:" + std::to_string(seq);
    }
    ::close(fd);
    // Every file but the last was fsynced whole before the next was created.
    if (fi + 1 < files.size() && static_cast<uint64_t>(st.st_size) != per_file * kRecordBytes && problem.empty())
      problem = "short_file:" + files[fi];
  }
  if (static_cast<long long>(records) <= acked && problem.empty()) problem = "acked_missing:" + std::to_string(records);
  const bool ok = problem.empty();
  std::printf(
      "crashw-verify run=%llu ok=%d records=%llu valid=%llu zero=%llu partial=%llu bad=%llu first_not_valid=%lld "
      "acked=%lld bytes=%llu%s%s\n",
      static_cast<unsigned long long>(run), ok ? 1 : 0, static_cast<unsigned long long>(records),
      static_cast<unsigned long long>(valid), static_cast<unsigned long long>(zero),
      static_cast<unsigned long long>(partial), static_cast<unsigned long long>(bad), first_not_valid, acked,
      static_cast<unsigned long long>(bytes), ok ? "" : " problem=", problem.c_str());
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "write" && argc == 6) {
    return Write(argv[2], std::strtoull(argv[3], nullptr, 10), std::strtoull(argv[4], nullptr, 10),
                 std::strtoull(argv[5], nullptr, 10));
  }
  if (mode == "verify" && argc == 6) {
    return Verify(argv[2], std::strtoull(argv[3], nullptr, 10), std::strtoull(argv[4], nullptr, 10),
                  std::strtoll(argv[5], nullptr, 10));
  }
  std::fprintf(stderr,
               "usage: coco-crash-writer write DIR RUN SYNC_EVERY RECORDS_PER_FILE\n"
               "       coco-crash-writer verify DIR RUN RECORDS_PER_FILE ACKED\n");
  return 2;
}
