// Structured logging: one JSON object per line, one line per event.
//
//   log::Info("volume.activated", {{"volume", id}, {"device", "/dev/vdb"}});
//   -> {"ts":"2026-11-23T12:00:00.123Z","level":"info","component":"agent",
//       "event":"volume.activated","volume":"v1","device":"/dev/vdb"}
//
// Never pass key material or anything derived from it as a field.
#pragma once

#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>

namespace cocostorage::log {

enum class Level { kDebug, kInfo, kWarn, kError };

// Sets the component name and minimum level. Safe to call more than once.
void Init(std::string component, Level level = Level::kInfo);
// Parses "debug" / "info" / "warn" / "error"; returns false on anything else.
bool ParseLevel(std::string_view text, Level* out);

using Fields = std::initializer_list<std::pair<const char*, nlohmann::json>>;

void Emit(Level level, std::string_view event, Fields fields);
inline void Debug(std::string_view event, Fields fields = {}) { Emit(Level::kDebug, event, fields); }
inline void Info(std::string_view event, Fields fields = {}) { Emit(Level::kInfo, event, fields); }
inline void Warn(std::string_view event, Fields fields = {}) { Emit(Level::kWarn, event, fields); }
inline void Error(std::string_view event, Fields fields = {}) { Emit(Level::kError, event, fields); }

}  // namespace cocostorage::log
