// The node plugin's Dockerfile: parsed and linted by dockerfile-utils (the
// Docker language server's validator), and checked against the facts it
// depends on: Debian package names, the CMake target, the chart's image use.
// (No container engine here, so the image itself is not built in CI.)
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { DockerfileParser } from "dockerfile-ast";
import { validate } from "dockerfile-utils";
import { deployDir } from "./lib.mjs";

const dockerfilePath = join(deployDir, "image", "Dockerfile");
const text = readFileSync(dockerfilePath, "utf8");
const repoRoot = resolve(deployDir, "..");

function instructions() {
  return DockerfileParser.parse(text).getInstructions().map((i) => ({ kw: i.getKeyword(), args: i.getArgumentsContent() ?? "" }));
}

function aptInstalls(stageIndex) {
  // Package names installed by `apt-get install` in the given FROM stage.
  const stages = [];
  for (const i of instructions()) {
    if (i.kw === "FROM") stages.push([]);
    else if (stages.length) stages.at(-1).push(i);
  }
  const pkgs = [];
  for (const i of stages[stageIndex]) {
    if (i.kw !== "RUN") continue;
    const m = /apt-get install ([^&]+)/.exec(i.args.replace(/\\\n/g, " "));
    if (m) pkgs.push(...m[1].split(/\s+/).filter((w) => w && !w.startsWith("-")));
  }
  return pkgs;
}

describe("node plugin image", () => {
  test("Dockerfile has no lint errors", () => {
    const problems = validate(text).filter((d) => d.severity === 1 /* error */ || d.severity === 2 /* warning */);
    assert.deepEqual(problems.map((p) => `line ${p.range.start.line + 1}: ${p.message}`), []);
  });

  test("multi-stage: bookworm builder, bookworm-slim runtime, non-root default user", () => {
    const ins = instructions();
    const froms = ins.filter((i) => i.kw === "FROM").map((i) => i.args);
    assert.equal(froms.length, 2);
    assert.match(froms[0], /^debian:\$\{DEBIAN_RELEASE\} AS build$/);
    assert.match(froms[1], /^debian:\$\{DEBIAN_RELEASE\}-slim AS runtime$/);
    assert.ok(ins.some((i) => i.kw === "ARG" && i.args === "DEBIAN_RELEASE=bookworm"));
    const users = ins.filter((i) => i.kw === "USER");
    assert.equal(users.at(-1)?.args, "65532:65532");
    const entry = ins.filter((i) => i.kw === "ENTRYPOINT").at(-1);
    assert.equal(entry.args, '["/usr/bin/cocostorage-csi"]');
    assert.match(text, /^COPY --from=build \/out\/ \/$/m, "runtime copies only the build output");
  });

  test("the runtime stage installs only the plugin's runtime libraries", () => {
    assert.deepEqual(aptInstalls(1).sort(), ["ceph-common", "kmod", "libabsl20220623", "libfmt9", "libgrpc++1.51", "libprotobuf32", "librados2", "librbd1", "libspdlog1.10", "libssl3"]);
    for (const dev of aptInstalls(1)) assert.doesNotMatch(dev, /-dev$|^g\+\+|^cmake/);
  });

  test("the build stage installs the project's build dependencies", () => {
    const deps = readFileSync(join(repoRoot, "scripts", "install-deps.sh"), "utf8");
    for (const p of aptInstalls(0)) assert.match(deps, new RegExp(`\\s${p.replace(/[+.]/g, "\\$&")}\\s`), `${p} is not in scripts/install-deps.sh`);
    for (const p of ["libgrpc++-dev", "protobuf-compiler-grpc", "libcryptsetup-dev", "libdevmapper-dev", "libblkid-dev"]) {
      assert.ok(aptInstalls(0).includes(p), `builder lacks ${p} (the top-level CMakeLists requires it)`);
    }
  });

  // apt-cache answers from this machine's package lists (Debian bookworm).
  const aptOk = spawnSync("apt-cache", ["show", "libc6"], { encoding: "utf8" }).status === 0;
  test("every package named exists in Debian bookworm", { skip: !aptOk && "apt lists not available" }, () => {
    // One call (apt-cache loads its cache once); it fails naming any
    // package it does not know.
    const r = spawnSync("apt-cache", ["show", "--no-all-versions", ...aptInstalls(0), ...aptInstalls(1)], { encoding: "utf8", maxBuffer: 64 << 20 });
    assert.equal(r.status, 0, `apt-cache show: ${r.stderr}`);
  });

  const csiCmake = join(repoRoot, "csi-driver", "CMakeLists.txt");
  test("the CMake target it builds exists", { skip: !existsSync(csiCmake) && "csi-driver/CMakeLists.txt not there yet" }, () => {
    assert.match(readFileSync(csiCmake, "utf8"), /add_executable\(cocostorage-csi\b/);
    assert.match(text, /--target cocostorage-csi\b/);
    assert.match(text, /\/build\/csi-driver\/cocostorage-csi/);
  });

  // When a build tree has the binary, check that the runtime packages cover
  // every library it needs (its NEEDED entries resolved by ldd here).
  const built = [process.env.COCOSTORAGE_CSI_BINARY, ...readdirSync(repoRoot).filter((d) => d.startsWith("build")).map((d) => join(repoRoot, d, "csi-driver", "cocostorage-csi"))]
    .filter(Boolean)
    .find(existsSync);
  test("runtime packages provide every shared library the binary needs", { skip: !built && "no built cocostorage-csi" }, () => {
    const ldd = spawnSync("ldd", [built], { encoding: "utf8" }).stdout;
    const found = [...ldd.matchAll(/^\s*(\S+) => (\/\S+)/gm)].filter((m) => !/^lib(asan|ubsan|lsan|tsan)\b/.test(m[1]));
    const libs = found.map((m) => m[1]);
    // "*/x86_64-linux-gnu/libfoo.so.1": matches the /lib and /usr/lib spellings
    // (usrmerge) but not other architectures' copies.
    const patterns = found.map((m) => `*/${m[2].split("/").slice(-2).join("/")}`);
    assert.ok(libs.length > 5, "ldd found the libraries");
    // Which package ships each library (one dpkg -S for all of them).
    const owners = new Map();
    const r = spawnSync("dpkg", ["-S", ...patterns], { encoding: "utf8", maxBuffer: 64 << 20 });
    for (const line of r.stdout.split("\n")) {
      const m = /^([^:]+)(?::\S+)?: \S*\/([^/]+)$/.exec(line.trim());
      if (m && libs.includes(m[2])) owners.set(m[2], m[1]);
    }
    // Packages the runtime stage has: what it installs, their dependencies
    // (apt-cache depends --recurse) and the base image's libc/libstdc++.
    const closure = (pkgs) => {
      const out = new Set([...pkgs, "libc6", "libgcc-s1", "libstdc++6", "zlib1g"]);
      const d = spawnSync("apt-cache", ["depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", ...pkgs], { encoding: "utf8", maxBuffer: 64 << 20 });
      for (const line of d.stdout.split("\n")) {
        const m = /^(?:\|?(?:Pre)?Depends: )?<?([a-z0-9][a-z0-9+.-]+)>?$/.exec(line.trim());
        if (m) out.add(m[1]);
      }
      return out;
    };
    const missing = (pkgs) => {
      const have = closure(pkgs);
      return libs.filter((l) => owners.has(l) && !have.has(owners.get(l))).map((l) => `${l} (${owners.get(l)})`);
    };
    assert.ok(owners.size >= libs.length / 2, `dpkg knows the owners of the libraries (${owners.size}/${libs.length})`);
    assert.deepEqual(missing(aptInstalls(1)), [], "libraries the runtime stage lacks");
    // The check is not vacuous: without libgrpc++1.51 it finds gaps.
    assert.notDeepEqual(missing(aptInstalls(1).filter((p) => p !== "libgrpc++1.51")), []);
  });

  test("the chart runs the image's entrypoint with the plugin's flags", () => {
    const ds = readFileSync(join(deployDir, "helm", "cocostorage", "templates", "daemonset.yaml"), "utf8");
    assert.doesNotMatch(ds, /^\s+command:/m, "the chart must not override the image's ENTRYPOINT");
    for (const flag of ["--endpoint", "--node-id", "--driver-name", "--backing-root", "--state-dir", "--kata-direct-volume-root", "--max-volumes-per-node", "--log-level"]) {
      assert.match(ds, new RegExp(`- ${flag}=`));
    }
  });
});
