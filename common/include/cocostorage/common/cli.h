// Command-line parsing for every binary: CLI11 (Debian libcli11-dev, header
// only), with one convention for how a parse ends.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>

namespace cocostorage {

// Parses argv into `app`. nullopt: go on. Otherwise the exit code to stop
// with: 0 after --help (printed), 2 on a usage error (its message printed).
inline std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);
    return 2;
  }
  return std::nullopt;
}

}  // namespace cocostorage
