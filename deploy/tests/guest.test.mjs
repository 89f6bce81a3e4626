// The guest side: the agent's config file, its systemd unit (checked by
// systemd-analyze verify) and install-guest.sh run against a scratch rootfs.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import Ajv from "ajv";
import { deployDir } from "./lib.mjs";

const guestDir = join(deployDir, "guest");
const unitText = readFileSync(join(guestDir, "cocostorage-agent.service"), "utf8");
const agentSchema = JSON.parse(readFileSync(join(guestDir, "agent.schema.json"), "utf8"));
const validateAgentConfig = new Ajv({ allErrors: true, strict: false }).compile(agentSchema);

function unitKeys(text) {
  const out = new Map();
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const s = /^\[(\w+)\]$/.exec(line);
    if (s) { section = s[1]; continue; }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (kv) out.set(`${section}.${kv[1]}`, kv[2]);
  }
  return out;
}

const hasSystemd = spawnSync("systemd-analyze", ["--version"], { encoding: "utf8" }).status === 0;

// systemd-analyze verify exits 0 on unknown keys and bad values but prints
// them; any line about the unit counts as a failure.
function verifyUnit(rootfs, unitName) {
  const r = spawnSync("systemd-analyze", ["verify", "--man=no", `--root=${rootfs}`, unitName], { encoding: "utf8" });
  const complaints = `${r.stdout}\n${r.stderr}`.split("\n").filter((l) => l.includes(unitName) || /Unknown key|Failed to parse|ignoring/i.test(l));
  return { status: r.status, complaints };
}

function scratchRootfs() {
  const root = mkdtempSync(join(tmpdir(), "coco-rootfs-"));
  mkdirSync(join(root, "usr/sbin"), { recursive: true });
  mkdirSync(join(root, "usr/lib/systemd/system"), { recursive: true });
  writeFileSync(join(root, "usr/lib/systemd/system/kata-containers.target"), "[Unit]\nDescription=Kata Containers Agent Target\n");
  for (const t of ["mkfs.ext4", "mkfs.xfs"]) {
    writeFileSync(join(root, "usr/sbin", t), "#!/bin/sh\n");
    chmodSync(join(root, "usr/sbin", t), 0o755);
  }
  // The units' readiness checks run /bin/sh.
  mkdirSync(join(root, "bin"), { recursive: true });
  writeFileSync(join(root, "bin/sh"), "#!/bin/true\n");
  chmodSync(join(root, "bin/sh"), 0o755);
  return root;
}

describe("guest side", () => {
  test("agent.json follows the agent's config contract", () => {
    const cfg = JSON.parse(readFileSync(join(guestDir, "agent.json"), "utf8"));
    assert.ok(validateAgentConfig(cfg), JSON.stringify(validateAgentConfig.errors));
    assert.deepEqual(cfg.listen, ["unix:///run/cocostorage/agent.sock"], "production serves the API guest-locally only (no vsock: the host could reach it)");
    assert.equal(cfg.storage_root, "/run/kata-containers/sandbox/storage", "Kata's sandbox storage dir");
  });

  test("the config schema rejects what the agent rejects", () => {
    for (const bad of [{ listen: "http://x" }, { storage_root: "relative" }, { log_level: "trace" }, { device_timeout_ms: -1 }, { device_timout_ms: 1 }]) {
      assert.equal(validateAgentConfig(bad), false, JSON.stringify(bad));
    }
  });

  const agentMain = resolve(deployDir, "..", "guest-agent", "src", "main.cc");
  test("every config key the schema allows is one the agent parses", { skip: !existsSync(agentMain) && "guest-agent/src/main.cc absent" }, () => {
    const src = readFileSync(agentMain, "utf8");
    for (const key of Object.keys(agentSchema.properties)) assert.match(src, new RegExp(`key == "${key}"`), `agent does not parse "${key}"`);
    const parsed = [...src.matchAll(/key == "(\w+)"/g)].map((m) => m[1]);
    for (const key of parsed) assert.ok(key in agentSchema.properties, `schema lacks "${key}"`);
  });

  const keyConfig = resolve(deployDir, "..", "guest-agent", "src", "keys", "key_config.cc");
  test("every keys.* config key the schema allows is one the agent parses", { skip: !existsSync(keyConfig) && "key_config.cc absent" }, () => {
    const src = readFileSync(keyConfig, "utf8");
    const keys = agentSchema.properties.keys.properties;
    for (const key of Object.keys(keys)) assert.match(src, new RegExp(`key == "${key}"`), `agent does not parse "keys.${key}"`);
    const parsed = [...src.matchAll(/key == "(\w+)"/g)].map((m) => m[1]);
    for (const key of parsed) assert.ok(key in keys, `schema lacks "keys.${key}"`);
    assert.equal(validateAgentConfig({ keys: { provider: "vault" } }), false);
    assert.equal(validateAgentConfig({ keys: { provder: "kbs" } }), false);
    assert.equal(validateAgentConfig({ keys: { provider: "kbs", kbs_url: "https://kbs:8080", attester: "aa", tee: "snp" } }), true);
  });

  const policyConfig = resolve(deployDir, "..", "guest-agent", "src", "policy", "policy_source.cc");
  test("every policy.* config key the schema allows is one the agent parses", { skip: !existsSync(policyConfig) && "policy_source.cc absent" }, () => {
    const src = readFileSync(policyConfig, "utf8");
    const keys = agentSchema.properties.policy.properties;
    for (const key of Object.keys(keys)) assert.match(src, new RegExp(`key == "${key}"`), `agent does not parse "policy.${key}"`);
    const parsed = [...src.matchAll(/key == "(\w+)"/g)].map((m) => m[1]);
    for (const key of parsed) assert.ok(key in keys, `schema lacks "policy.${key}"`);
    assert.equal(validateAgentConfig({ policy: { verifier: "tpm" } }), false);
    assert.equal(validateAgentConfig({ policy: { verifer: "aa" } }), false);
    assert.equal(validateAgentConfig({ policy: { init_data_digest: "abc" } }), false);
    assert.equal(validateAgentConfig({ policy: { init_data: "relative.toml" } }), false);
    assert.equal(validateAgentConfig({ policy: { required: true, verifier: "configured-digest", init_data_digest: "a".repeat(64) } }), true);
  });

  test("unit runs the agent as root with its config, in the Kata target", () => {
    const k = unitKeys(unitText);
    assert.equal(k.get("Service.ExecStart"), "/usr/bin/cocostorage-agent --config=/etc/cocostorage/agent.json");
    assert.equal(k.get("Service.User"), "root");
    assert.equal(k.get("Install.WantedBy"), "kata-containers.target");
    assert.equal(k.get("Unit.Before"), "kata-agent.service");
    assert.match(k.get("Service.CapabilityBoundingSet"), /CAP_SYS_ADMIN/);
    // Options that give the service a private mount namespace would hide its
    // mounts from the kata-agent and the containers.
    for (const opt of ["PrivateTmp", "ProtectSystem", "ProtectHome", "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "ProtectKernelLogs", "PrivateDevices", "ProtectKernelModules"]) {
      assert.ok(!k.has(`Service.${opt}`), `${opt} would put the agent in its own mount namespace`);
    }
    assert.equal(k.get("Service.PrivateMounts"), "no");
  });

  test("install-guest.sh installs and enables the agent in a rootfs; systemd-analyze verifies the unit", () => {
    const root = scratchRootfs();
    try {
      // Any ELF binary stands in for the agent (it is not run).
      const r = spawnSync(join(guestDir, "install-guest.sh"), ["--rootfs", root, "--agent", "/usr/bin/true"], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(statSync(join(root, "usr/bin/cocostorage-agent")).mode & 0o777, 0o755);
      assert.equal(statSync(join(root, "etc/cocostorage/agent.json")).mode & 0o777, 0o600);
      assert.ok(existsSync(join(root, "etc/modules-load.d/cocostorage.conf")));
      const link = join(root, "etc/systemd/system/kata-containers.target.wants/cocostorage-agent.service");
      assert.ok(lstatSync(link).isSymbolicLink());
      assert.equal(readlinkSync(link), "/usr/lib/systemd/system/cocostorage-agent.service");
      // The loader and libc of the stand-in binary came along.
      assert.ok(existsSync(join(root, "lib64/ld-linux-x86-64.so.2")) || process.arch !== "x64");
      if (hasSystemd) {
        const v = verifyUnit(root, "cocostorage-agent.service");
        assert.deepEqual(v.complaints, [], "systemd-analyze verify");
        assert.equal(v.status, 0);
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test("install-guest.sh fails when mkfs tools are missing from the rootfs", () => {
    const root = scratchRootfs();
    try {
      rmSync(join(root, "usr/sbin/mkfs.xfs"));
      const r = spawnSync(join(guestDir, "install-guest.sh"), ["--rootfs", root, "--agent", "/usr/bin/true"], { encoding: "utf8" });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /mkfs\.xfs is not in the rootfs/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test("systemd-analyze verify catches a broken unit (self-test)", { skip: !hasSystemd && "systemd-analyze not installed" }, () => {
    const root = scratchRootfs();
    try {
      mkdirSync(join(root, "usr/bin"), { recursive: true });
      writeFileSync(join(root, "usr/bin/cocostorage-agent"), "#!/bin/sh\n");
      chmodSync(join(root, "usr/bin/cocostorage-agent"), 0o755);
      writeFileSync(join(root, "usr/lib/systemd/system/cocostorage-agent.service"), unitText.replace("RestartSec=1", "RestartSek=1"));
      const v = verifyUnit(root, "cocostorage-agent.service");
      assert.ok(v.complaints.some((l) => /RestartSek/.test(l)), v.complaints.join("\n"));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test("kernel fragment enables what the agent needs", () => {
    const frag = readFileSync(join(guestDir, "kernel-config.fragment"), "utf8");
    for (const opt of ["DM_CRYPT", "DM_INTEGRITY", "DM_THIN_PROVISIONING", "BLK_DEV_LOOP", "EXT4_FS", "XFS_FS", "VIRTIO_VSOCKETS"]) {
      assert.match(frag, new RegExp(`^CONFIG_${opt}=y$`, "m"));
    }
  });
});

// Guest packaging (docs/deploy.md, "Guest packaging"): the extension
// manifest that puts the agent in the CDH slot, the CDH config that moves the
// real CDH, the systemd alternative, and that install-guest.sh installs them.
// TOML is parsed by Python's tomllib (a real TOML 1.0 parser).
function parseToml(file) {
  const r = spawnSync("python3", ["-c", "import json,sys,tomllib; print(json.dumps(tomllib.load(open(sys.argv[1],'rb'))))", file], { encoding: "utf8" });
  assert.equal(r.status, 0, `${file} is not valid TOML: ${r.stderr}`);
  return JSON.parse(r.stdout);
}
const srcConstant = (rel, name) => {
  const m = new RegExp(`${name}\\[\\] = "([^"]+)"`).exec(readFileSync(resolve(deployDir, "..", rel), "utf8"));
  assert.ok(m, `${name} not found in ${rel}`);
  return m[1];
};
// kata-agent's constant (src/agent/src/main.rs CDH_SOCKET), not configurable.
const KATA_CDH_SOCKET = "/run/confidential-containers/cdh.sock";
// What kata-agent publishes to manifests (build_substitution_ctx).
const KATA_MANIFEST_VARS = new Set(["aa_attestation_uri", "aa_attestation_socket", "aa_config_path", "cdh_config_path", "cdh_socket",
  "ocicrypt_config_path", "rest_api_features", "launch_process_timeout", "initdata_toml_path", "extension_root", "attester_variant"]);
const readUnit = (rel) => unitKeys(readFileSync(join(guestDir, rel), "utf8"));
const words = (v) => (v ?? "").split(/\s+/).filter(Boolean);

describe("guest packaging", () => {
  const agentCfg = JSON.parse(readFileSync(join(guestDir, "agent.json"), "utf8"));
  const upstream = srcConstant("guest-agent/src/cdh/forwarder.h", "kCdhUpstreamSocket");

  test("agent.json: cdh_socket is kata-agent's constant, cdh_upstream_socket the forwarder's default", () => {
    assert.equal(agentCfg.cdh_socket, KATA_CDH_SOCKET);
    assert.equal(srcConstant("guest-agent/src/cdh/secure_mount.h", "kCdhSocket"), KATA_CDH_SOCKET);
    assert.equal(agentCfg.cdh_upstream_socket, upstream);
    assert.notEqual(agentCfg.cdh_upstream_socket, agentCfg.cdh_socket);
    assert.equal(validateAgentConfig({ cdh_upstream_socket: "relative.sock" }), false, "the agent refuses a relative path");
    assert.equal(validateAgentConfig({ cdh_upstream_socket: "off" }), true);
  });

  test("cdh.toml parses and moves the real CDH to the agent's upstream socket", () => {
    const cdh = parseToml(join(guestDir, "cdh.toml"));
    assert.equal(cdh.socket, `unix://${upstream}`, "CDH's socket must be where the agent forwards to");
    assert.equal(typeof cdh.kbc?.name, "string", "CDH requires [kbc] name");
  });

  test("components.toml: the real CDH on the upstream socket first, then the agent in the CDH slot", () => {
    const m = parseToml(join(guestDir, "components.toml"));
    assert.equal(m.schema_version, 1);
    const ids = m.process.map((p) => p.id);
    assert.deepEqual(ids, ["attestation-agent", "confidential-data-hub", "cocostorage-agent", "api-server-rest"]);
    const byId = Object.fromEntries(m.process.map((p) => [p.id, p]));
    const cdh = byId["confidential-data-hub"], agent = byId["cocostorage-agent"];
    assert.equal(cdh.level, 2);
    assert.equal(agent.level, 2, "the agent is launched whenever a CDH would be");
    assert.equal(cdh.wait_socket, upstream, "kata-agent must wait for the CDH on the upstream socket, never on cdh.sock");
    assert.equal(cdh.config, "${cdh_config_path}", "init-data's cdh.toml still reaches the CDH");
    assert.equal(cdh.env.CDH_CONFIG_PATH, "${extension_root}/etc/cocostorage/cdh.toml");
    assert.equal(agent.wait_socket, "${cdh_socket}");
    assert.equal(agent.path, "usr/local/bin/cocostorage-agent");
    assert.deepEqual(agent.args, ["--config", "${extension_root}/etc/cocostorage/agent.json"]);
    assert.ok(!("config" in agent), "kata-agent would append -c FILE, which the agent does not take");
    for (const p of m.process) {
      const text = JSON.stringify(p);
      for (const [, v] of text.matchAll(/\$\{(\w+)\}/g)) assert.ok(KATA_MANIFEST_VARS.has(v), `${p.id}: kata-agent publishes no \${${v}}`);
      for (const path of [p.path, ...Object.values(p.variants ?? {}).map((x) => x.path)].filter(Boolean)) {
        assert.ok(!path.startsWith("/") && !path.split("/").includes(".."), `${p.id}: ${path} must be relative to the extension root`);
      }
      if (p.id !== "cocostorage-agent") assert.notEqual(p.wait_socket, "${cdh_socket}", `${p.id} must not take cdh.sock`);
    }
  });

  test("systemd route: real CDH, then the agent (ready once cdh.sock listens), then kata-agent", () => {
    const agent = readUnit("cocostorage-agent.service");
    const cdh = readUnit("cocostorage-cdh.service");
    const dropIn = readUnit("kata-agent.service.d/10-cocostorage.conf");
    assert.ok(words(agent.get("Unit.Before")).includes("kata-agent.service"));
    assert.ok(words(agent.get("Unit.After")).includes("cocostorage-cdh.service"));
    assert.ok(words(agent.get("Unit.Wants")).includes("cocostorage-cdh.service"));
    assert.ok(agent.get("Service.ExecStartPost").includes(`[ -S ${agentCfg.cdh_socket} ]`), "started = cdh.sock exists");
    assert.ok(words(cdh.get("Unit.Before")).includes("cocostorage-agent.service"));
    assert.ok(words(cdh.get("Unit.Before")).includes("kata-agent.service"));
    assert.equal(cdh.get("Service.ExecStart"), "/usr/local/bin/confidential-data-hub -c /etc/cocostorage/cdh.toml");
    assert.ok(cdh.get("Service.ExecStartPost").includes(`[ -S ${upstream} ]`));
    assert.equal(cdh.get("Install.WantedBy"), "kata-containers.target");
    assert.deepEqual(words(dropIn.get("Unit.After")), ["cocostorage-agent.service"]);
    assert.deepEqual(words(dropIn.get("Unit.Requires")), ["cocostorage-agent.service"]);
  });

  test("install-guest.sh --rootfs installs the CDH unit, its config and kata-agent's drop-in; systemd-analyze verifies them", () => {
    const root = scratchRootfs();
    try {
      for (const stand of ["usr/local/bin/confidential-data-hub"]) {
        mkdirSync(join(root, stand, ".."), { recursive: true });
        writeFileSync(join(root, stand), "#!/bin/true\n");
        chmodSync(join(root, stand), 0o755);
      }
      const r = spawnSync(join(guestDir, "install-guest.sh"), ["--rootfs", root, "--agent", "/usr/bin/true"], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(readFileSync(join(root, "etc/cocostorage/cdh.toml"), "utf8"), readFileSync(join(guestDir, "cdh.toml"), "utf8"));
      assert.ok(existsSync(join(root, "usr/lib/systemd/system/cocostorage-cdh.service")));
      assert.ok(existsSync(join(root, "etc/systemd/system/kata-agent.service.d/10-cocostorage.conf")));
      assert.equal(readlinkSync(join(root, "etc/systemd/system/kata-containers.target.wants/cocostorage-cdh.service")),
        "/usr/lib/systemd/system/cocostorage-cdh.service");
      if (hasSystemd) {
        for (const unit of ["cocostorage-agent.service", "cocostorage-cdh.service"]) {
          const v = verifyUnit(root, unit);
          assert.deepEqual(v.complaints, [], `systemd-analyze verify ${unit}`);
          assert.equal(v.status, 0);
        }
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test("install-guest.sh --extension puts the agent, its configs and our manifest into a coco extension tree", () => {
    const ext = mkdtempSync(join(tmpdir(), "coco-ext-"));
    try {
      mkdirSync(join(ext, "etc/kata-extensions"), { recursive: true });
      mkdirSync(join(ext, "usr/local/bin"), { recursive: true });
      writeFileSync(join(ext, "usr/local/bin/confidential-data-hub"), "#!/bin/true\n");
      chmodSync(join(ext, "usr/local/bin/confidential-data-hub"), 0o755);
      writeFileSync(join(ext, "etc/kata-extensions/components.toml"), "schema_version = 1\n");
      const r = spawnSync(join(guestDir, "install-guest.sh"), ["--extension", ext, "--agent", "/usr/bin/true"], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(statSync(join(ext, "usr/local/bin/cocostorage-agent")).mode & 0o777, 0o755);
      assert.equal(statSync(join(ext, "etc/cocostorage/agent.json")).mode & 0o777, 0o600);
      assert.equal(readFileSync(join(ext, "etc/cocostorage/cdh.toml"), "utf8"), readFileSync(join(guestDir, "cdh.toml"), "utf8"));
      assert.equal(readFileSync(join(ext, "etc/kata-extensions/components.toml"), "utf8"), readFileSync(join(guestDir, "components.toml"), "utf8"));
      assert.ok(!existsSync(join(ext, "usr/lib/cocostorage/libc.so.6")), "the C library comes from the base image");
      // A manifest of a schema we do not know is not overwritten.
      writeFileSync(join(ext, "etc/kata-extensions/components.toml"), "schema_version = 2\n");
      const again = spawnSync(join(guestDir, "install-guest.sh"), ["--extension", ext, "--agent", "/usr/bin/true"], { encoding: "utf8" });
      assert.notEqual(again.status, 0);
      assert.match(again.stderr, /not schema_version 1/);
    } finally {
      rmSync(ext, { recursive: true, force: true });
    }
  });
});
