// Exits 0 when node_modules holds exactly the packages of package-lock.json
// (npm writes a copy of the lock it installed to node_modules/.package-lock.json).
// Used by install-tools.sh (skip `npm ci` when up to date) and by ctest's
// deploy.tools fixture. `npm ls` cannot be used: it reports the peer
// dependencies that .npmrc tells npm not to install.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkgs = (file) => {
  const l = JSON.parse(readFileSync(file, "utf8"));
  return Object.fromEntries(Object.keys(l.packages).filter(Boolean).sort().map((k) => [k, l.packages[k].version]));
};
const want = pkgs(join(here, "package-lock.json"));
let have;
try {
  have = pkgs(join(here, "node_modules", ".package-lock.json"));
} catch {
  console.error("node_modules is not installed: run deploy/tests/install-tools.sh");
  process.exit(1);
}
const diff = [...new Set([...Object.keys(want), ...Object.keys(have)])].filter((k) => want[k] !== have[k]);
if (diff.length) {
  console.error(`node_modules differs from package-lock.json (${diff.slice(0, 5).map((k) => `${k}: want ${want[k]}, have ${have[k]}`).join("; ")}): run deploy/tests/install-tools.sh`);
  process.exit(1);
}
console.log(`node_modules matches package-lock.json (${Object.keys(want).length} packages)`);
