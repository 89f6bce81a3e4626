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
