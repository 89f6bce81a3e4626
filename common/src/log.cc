#include "cocostorage/common/log.h"

#include <chrono>
#include <ctime>
#include <mutex>

#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace cocostorage::log {
namespace {

struct State {
  std::mutex mu;
  std::string component = "cocostorage";
  Level level = Level::kInfo;
  std::shared_ptr<spdlog::logger> logger;
};

State& GetState() {
  static State* s = [] {
    auto* st = new State();
    // stderr so that a binary's stdout stays free for command output.
    st->logger = spdlog::stderr_logger_mt("cocostorage");
    st->logger->set_pattern("%v");
    st->logger->set_level(spdlog::level::trace);
    st->logger->flush_on(spdlog::level::trace);
    return st;
  }();
  return *s;
}

const char* LevelName(Level l) {
  switch (l) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

std::string NowIso8601() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof(out), "%s.%03dZ", buf, static_cast<int>(ms));
  return out;
}

}  // namespace

void Init(std::string component, Level level) {
  State& s = GetState();
  std::lock_guard<std::mutex> lock(s.mu);
  s.component = std::move(component);
  s.level = level;
}

bool ParseLevel(std::string_view text, Level* out) {
  if (text == "debug")
    *out = Level::kDebug;
  else if (text == "info")
    *out = Level::kInfo;
  else if (text == "warn")
    *out = Level::kWarn;
  else if (text == "error")
    *out = Level::kError;
  else
    return false;
  return true;
}

void Emit(Level level, std::string_view event, Fields fields) {
  State& s = GetState();
  std::string component;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (level < s.level) return;
    component = s.component;
  }
  nlohmann::ordered_json line;
  line["ts"] = NowIso8601();
  line["level"] = LevelName(level);
  line["component"] = component;
  line["event"] = std::string(event);
  for (const auto& [key, value] : fields) line[key] = value;
  // error_handler_t::replace: a non-UTF-8 path must not turn a log line into a crash.
  s.logger->info(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace cocostorage::log
