#include <libdevmapper.h>
#include <openssl/crypto.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string_view>
#include <thread>

#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "dm/dm_client.h"
#include "dm/mapper_lock.h"

namespace cocostorage::agent {

std::string DmInfo::DevNumber() const { return Cat(major, ":", minor); }
std::string DmInfo::DevPath() const { return Cat("/dev/dm-", minor); }

namespace {

struct TaskDeleter {
  void operator()(dm_task* t) const { dm_task_destroy(t); }
};
using TaskPtr = std::unique_ptr<dm_task, TaskDeleter>;

Status DmFailure(const std::string& what) {
  return absl::InternalError(
      Cat("device-mapper: ", what, " failed (is the dm-mod module loaded and /dev/mapper/control present?)"));
}

// libdevmapper's messages become structured log lines instead of bare stderr.
// (printf-like, which tells clang's -Wformat-nonliteral that `fmt` is one.)
__attribute__((format(printf, 5, 6))) void DmLog(int level, const char* file, int line, int /*dm_errno_or_class*/,
                                                 const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (level <= 3) {  // _LOG_ERR and more severe
    log::Warn("devmapper.message", {{"text", std::string(buf)}, {"source", Cat(file ? file : "?", ":", line)}});
  } else {
    log::Debug("devmapper.message", {{"text", std::string(buf)}});
  }
}

class LibDevmapperClient : public DmClient {
 public:
  LibDevmapperClient() {
    dm_log_with_errno_init(DmLog);
    // The agent talks to the kernel directly; it neither needs nor waits for
    // udev (which a minimal guest may not run).
    dm_udev_set_sync_support(0);
    dm_log_init_verbose(0);
  }

  Status Create(const std::string& name, const std::vector<DmTarget>& table, bool read_only) override {
    std::lock_guard<std::mutex> lock(MapperLock());
    TaskPtr t(dm_task_create(DM_DEVICE_CREATE));
    if (!t) return absl::ResourceExhaustedError("dm_task_create");
    if (!dm_task_set_name(t.get(), name.c_str())) return DmFailure(Cat("naming ", name));
    if (!dm_task_set_uuid(t.get(), Cat("COCO-", name).c_str())) return DmFailure(Cat("uuid for ", name));
    if (read_only && !dm_task_set_ro(t.get())) return DmFailure("set read-only");
    for (const auto& tg : table) {
      if (!dm_task_add_target(t.get(), tg.start, tg.length, tg.type.c_str(), tg.params.c_str())) {
        return DmFailure(Cat("adding ", tg.type, " target to ", name));
      }
    }
    if (!dm_task_run(t.get())) {
      int err = dm_task_get_errno(t.get());
      if (err == EEXIST || err == EBUSY) return absl::AlreadyExistsError(Cat("device-mapper device ", name, " exists"));
      return absl::InternalError(Cat("creating device-mapper device ", name, " (", tableDescr(table), ") failed"));
    }
    dm_task_update_nodes();
    return OkStatus();
  }

  Status Remove(const std::string& name) override {
    for (int attempt = 0; attempt < 50; ++attempt) {
      {
        std::lock_guard<std::mutex> lock(MapperLock());
        TaskPtr info(dm_task_create(DM_DEVICE_INFO));
        if (!info || !dm_task_set_name(info.get(), name.c_str()) || !dm_task_run(info.get())) {
          return DmFailure(Cat("info ", name));
        }
        dm_info di{};
        if (!dm_task_get_info(info.get(), &di) || !di.exists) return OkStatus();
        TaskPtr t(dm_task_create(DM_DEVICE_REMOVE));
        if (!t || !dm_task_set_name(t.get(), name.c_str())) return DmFailure(Cat("remove ", name));
        if (dm_task_run(t.get())) {
          dm_task_update_nodes();
          return OkStatus();
        }
        if (dm_task_get_errno(t.get()) != EBUSY) return DmFailure(Cat("removing ", name));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return absl::UnavailableError(Cat("device-mapper device ", name, " stays busy"));
  }

  Status Message(const std::string& name, const std::string& message) override {
    std::lock_guard<std::mutex> lock(MapperLock());
    TaskPtr t(dm_task_create(DM_DEVICE_TARGET_MSG));
    if (!t || !dm_task_set_name(t.get(), name.c_str()) || !dm_task_set_sector(t.get(), 0) ||
        !dm_task_set_message(t.get(), message.c_str())) {
      return DmFailure(Cat("message to ", name));
    }
    if (!dm_task_run(t.get())) return DmFailure(Cat("message \"", message, "\" to ", name));
    return OkStatus();
  }

  StatusOr<std::optional<DmInfo>> Info(const std::string& name) override {
    std::lock_guard<std::mutex> lock(MapperLock());
    TaskPtr t(dm_task_create(DM_DEVICE_INFO));
    if (!t || !dm_task_set_name(t.get(), name.c_str()) || !dm_task_run(t.get())) return DmFailure(Cat("info ", name));
    dm_info di{};
    if (!dm_task_get_info(t.get(), &di)) return DmFailure(Cat("info ", name));
    if (!di.exists) return std::optional<DmInfo>();
    DmInfo out;
    out.major = di.major;
    out.minor = di.minor;
    out.open_count = di.open_count;
    return std::optional<DmInfo>(out);
  }

  StatusOr<std::vector<std::string>> ListNames() override {
    std::lock_guard<std::mutex> lock(MapperLock());
    TaskPtr t(dm_task_create(DM_DEVICE_LIST));
    if (!t || !dm_task_run(t.get())) return DmFailure("listing devices");
    std::vector<std::string> out;
    dm_names* names = dm_task_get_names(t.get());
    if (names == nullptr || names->dev == 0) return out;
    unsigned next = 0;
    do {
      names = reinterpret_cast<dm_names*>(reinterpret_cast<char*>(names) + next);
      out.emplace_back(names->name);
      next = names->next;
    } while (next != 0);
    return out;
  }

  StatusOr<std::vector<DmTarget>> TargetStatus(const std::string& name) override {
    return Query(DM_DEVICE_STATUS, name, "status");
  }

  StatusOr<std::vector<DmTarget>> Table(const std::string& name) override {
    return Query(DM_DEVICE_TABLE, name, "table");
  }

 private:
  StatusOr<std::vector<DmTarget>> Query(int task, const std::string& name, const char* what) {
    std::lock_guard<std::mutex> lock(MapperLock());
    TaskPtr t(dm_task_create(task));
    if (!t || !dm_task_set_name(t.get(), name.c_str())) return DmFailure(Cat(what, " of ", name));
    // Without this the kernel flushes a thin pool's metadata to answer, which
    // a failing pool cannot do.
    if (!dm_task_no_flush(t.get())) return DmFailure(Cat(what, " of ", name));
    if (task == DM_DEVICE_TABLE && !dm_task_secure_data(t.get())) return DmFailure(Cat(what, " of ", name));
    if (!dm_task_run(t.get())) {
      if (dm_task_get_errno(t.get()) == ENXIO)
        return absl::NotFoundError(Cat("device-mapper device ", name, " is missing"));
      return DmFailure(Cat(what, " of ", name));
    }
    std::vector<DmTarget> out;
    void* next = nullptr;
    do {
      uint64_t start = 0, length = 0;
      char* type = nullptr;
      char* params = nullptr;
      next = dm_get_next_target(t.get(), next, &start, &length, &type, &params);
      if (type == nullptr) break;
      const bool secret = task == DM_DEVICE_TABLE && std::string_view(type) == "crypt";
      out.push_back({start, length, type, params && !secret ? params : ""});
      // A crypt table's text may hold the key: wipe libdevmapper's copy.
      if (secret && params != nullptr) OPENSSL_cleanse(params, strlen(params));
    } while (next != nullptr);
    return out;
  }

  static std::string tableDescr(const std::vector<DmTarget>& table) {
    std::vector<std::string> parts;
    for (const auto& t : table) parts.push_back(Cat(t.type, " ", t.params));
    return Join(parts, "; ");
  }
};

}  // namespace

std::unique_ptr<DmClient> NewLibDevmapperClient() { return std::make_unique<LibDevmapperClient>(); }

}  // namespace cocostorage::agent
