// Runs the real cocostorage-csi binary (when a build tree has one) the way the
// chart deploys it: with the rendered DaemonSet's arguments, host paths
// re-rooted under a scratch directory, as uid 0 with no capability but
// CAP_LINUX_IMMUTABLE (the chart drops ALL and adds that one) and no_new_privs. Then drives a volume through the calls
// kubelet and the provisioner make, over the plugin's socket, and checks what
// the deployment relies on: the driver name, topology and max volumes; that
// mountInfo.json lands in the Kata directory with the backing file's path;
// that the pod's fsGroup reaches the metadata; and that SIGTERM drains
// within the pod's terminationGracePeriodSeconds.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { deployDir, parseYamlStream, renderChart } from "./lib.mjs";

const repoRoot = resolve(deployDir, "..");
const binary = [process.env.COCOSTORAGE_CSI_BINARY, ...readdirSync(repoRoot).filter((d) => d.startsWith("build")).map((d) => join(repoRoot, d, "csi-driver", "cocostorage-csi"))]
  .filter(Boolean)
  .find(existsSync);
const setpriv = spawnSync("setpriv", ["--version"]).status === 0;
const isRoot = process.getuid?.() === 0;
const skip = (!binary && "no built cocostorage-csi") || (!setpriv && "setpriv not installed") || (!isRoot && "needs root (the chart runs the plugin as uid 0)");

function callAsync(client, method, req) {
  return new Promise((ok, fail) => client[method](req, { deadline: Date.now() + 20000 }, (err, res) => (err ? fail(err) : ok(res))));
}

describe("plugin as the chart runs it", { skip }, () => {
  let root, proc, logs = "", identity, controller, node, ds, pluginArgs, values;
  const NODE = "node-a";

  before(async () => {
    const r = renderChart();
    assert.ok(r.ok, r.stderr);
    const objs = parseYamlStream(r.stdout).map(({ doc }) => doc);
    ds = objs.find((o) => o.kind === "DaemonSet");
    values = { driverName: objs.find((o) => o.kind === "CSIDriver").metadata.name, sc: objs.find((o) => o.kind === "StorageClass") };
    const pod = ds.spec.template.spec;
    const plugin = pod.containers.find((c) => c.name === "cocostorage-csi");

    // A scratch "host": every hostPath the pod mounts, re-rooted, root-owned,
    // with the modes the real ones have.
    root = mkdtempSync(join(tmpdir(), "coco-host-"));
    const hostDir = (p) => join(root, p);
    for (const v of pod.volumes.filter((v) => v.hostPath)) mkdirSync(hostDir(v.hostPath.path), { recursive: true, mode: 0o750 });
    const mountToHost = new Map(plugin.volumeMounts.map((m) => [m.mountPath, pod.volumes.find((v) => v.name === m.name)]));
    const rewrite = (value) => {
      for (const [mountPath, vol] of mountToHost) {
        if (!vol.hostPath) continue;
        if (value === mountPath || value.startsWith(`${mountPath}/`)) return hostDir(vol.hostPath.path) + value.slice(mountPath.length);
      }
      return value;
    };
    pluginArgs = plugin.args.map((a) => {
      const [flag, ...rest] = a.split("=");
      let v = rest.join("=").replace("$(NODE_NAME)", NODE);
      if (flag === "--endpoint") v = `unix://${rewrite(v.replace("unix://", ""))}`;
      // kubelet's root is not a mount of its own (only pods/ and the CSI
      // publish dir below it are): the scratch host mirrors it.
      else if (flag === "--kubelet-root") v = hostDir(v);
      else if (v.startsWith("/")) v = rewrite(v);
      return `${flag}=${v}`;
    });
    // uid 0, no capability but CAP_LINUX_IMMUTABLE (bounding set; root gets
    // it effective and permitted at exec), no_new_privs: what drop: [ALL],
    // add: [LINUX_IMMUTABLE] and allowPrivilegeEscalation: false give the container.
    proc = spawn("setpriv", ["--reuid=0", "--regid=0", "--clear-groups", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all,+linux_immutable", "--no-new-privs", binary, ...pluginArgs], { stdio: ["ignore", "pipe", "pipe"] });
    proc.stdout.on("data", (d) => (logs += d));
    proc.stderr.on("data", (d) => (logs += d));

    const sock = pluginArgs.find((a) => a.startsWith("--endpoint=")).replace("--endpoint=unix://", "");
    for (let i = 0; i < 100 && !existsSync(sock); i++) await sleep(100);
    assert.ok(existsSync(sock), `the plugin did not create its socket:\n${logs}`);

    const def = protoLoader.loadSync(join(repoRoot, "proto", "csi", "v1", "csi.proto"), { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
    const csi = grpc.loadPackageDefinition(def).csi.v1;
    const creds = grpc.credentials.createInsecure();
    identity = new csi.Identity(`unix://${sock}`, creds);
    controller = new csi.Controller(`unix://${sock}`, creds);
    node = new csi.Node(`unix://${sock}`, creds);
  });

  after(() => {
    for (const c of [identity, controller, node]) c?.close();
    if (proc && proc.exitCode === null) proc.kill("SIGKILL");
    if (root) rmSync(root, { recursive: true, force: true });
  });

  test("runs with CAP_LINUX_IMMUTABLE alone", () => {
    const status = readFileSync(`/proc/${proc.pid}/status`, "utf8");
    // setpriv execs the plugin, so the pid is the plugin's.
    assert.match(readFileSync(`/proc/${proc.pid}/cmdline`, "utf8"), /cocostorage-csi/);
    // CAP_LINUX_IMMUTABLE is capability 9: mask 0x200.
    for (const field of ["CapEff", "CapPrm", "CapBnd"]) assert.match(status, new RegExp(`${field}:\\s+0+200\\n`), field);
    assert.match(status, /CapAmb:\s+0+\n/);
    assert.match(status, /NoNewPrivs:\s+1/);
  });

  test("identity: the driver name the chart registers, and ready", async () => {
    const info = await callAsync(identity, "GetPluginInfo", {});
    assert.equal(info.name, values.driverName);
    const probe = await callAsync(identity, "Probe", {});
    assert.notEqual(probe.ready?.value, false);
  });

  test("node info: node id from NODE_NAME, topology key, max volumes from values", async () => {
    const info = await callAsync(node, "NodeGetInfo", {});
    assert.equal(info.node_id, NODE);
    assert.equal(info.accessible_topology.segments["topology.cocostorage.dev/node"], NODE);
    const max = ds.spec.template.spec.containers.find((c) => c.name === "cocostorage-csi").args.find((a) => a.startsWith("--max-volumes-per-node=")).split("=")[1];
    assert.equal(String(info.max_volumes_per_node), max);
    const caps = await callAsync(node, "NodeGetCapabilities", {});
    const names = caps.capabilities.map((c) => c.rpc?.type);
    assert.ok(names.includes("VOLUME_MOUNT_GROUP"), "fsGroupPolicy File needs VOLUME_MOUNT_GROUP");
    assert.ok(names.includes("STAGE_UNSTAGE_VOLUME"));
  });

  test("a volume's life cycle without capabilities: create, stage, publish, mountInfo.json, teardown", async () => {
    const topology = { requisite: [{ segments: { "topology.cocostorage.dev/node": NODE } }], preferred: [{ segments: { "topology.cocostorage.dev/node": NODE } }] };
    const cap = { mount: { fs_type: "", mount_flags: [], volume_mount_group: "" }, access_mode: { mode: "SINGLE_NODE_WRITER" } };
    const created = await callAsync(controller, "CreateVolume", {
      name: "pvc-0b1c", capacity_range: { required_bytes: String(64 << 20) }, volume_capabilities: [cap], parameters: values.sc.parameters, accessibility_requirements: topology,
    });
    const vol = created.volume;
    assert.deepEqual(vol.accessible_topology.map((t) => t.segments), [{ "topology.cocostorage.dev/node": NODE }]);

    const kubelet = join(root, "var/lib/kubelet");
    const staging = join(kubelet, "plugins/kubernetes.io/csi", values.driverName, "0123abcd/globalmount");
    mkdirSync(staging, { recursive: true, mode: 0o750 });
    const podUid = "7f1c2e9a-0000-4000-8000-000000000001";
    const targetParent = join(kubelet, "pods", podUid, "volumes/kubernetes.io~csi/pvc-0b1c");
    mkdirSync(targetParent, { recursive: true, mode: 0o750 });
    const target = join(targetParent, "mount");
    const pubCap = { mount: { fs_type: "ext4", mount_flags: [], volume_mount_group: "1000" }, access_mode: { mode: "SINGLE_NODE_SINGLE_WRITER" } };
    await callAsync(node, "NodeStageVolume", { volume_id: vol.volume_id, staging_target_path: staging, volume_capability: pubCap, volume_context: vol.volume_context });
    await callAsync(node, "NodePublishVolume", {
      volume_id: vol.volume_id, staging_target_path: staging, target_path: target, volume_capability: pubCap, readonly: false,
      volume_context: { ...vol.volume_context, "csi.storage.k8s.io/pod.name": "app-0", "csi.storage.k8s.io/pod.namespace": "default", "csi.storage.k8s.io/pod.uid": podUid, "csi.storage.k8s.io/serviceAccount.name": "default", "csi.storage.k8s.io/ephemeral": "false" },
    });

    // Kata's file: <kata root>/<base64url(target path)>/mountInfo.json.
    const kataArg = pluginArgs.find((a) => a.startsWith("--kata-direct-volume-root=")).split("=")[1];
    const dir = join(kataArg, Buffer.from(target).toString("base64url").padEnd(Math.ceil(target.length / 3) * 4, "="));
    const mi = JSON.parse(readFileSync(join(dir, "mountInfo.json"), "utf8"));
    assert.equal(statSync(join(dir, "mountInfo.json")).mode & 0o777, 0o600);
    assert.equal(mi["volume-type"], "blk");
    const backingArg = pluginArgs.find((a) => a.startsWith("--backing-root=")).split("=")[1];
    assert.ok(mi.device.startsWith(`${backingArg}/`), `device ${mi.device} is under the backing root the chart mounts at its host path`);
    assert.equal(mi.metadata.fsGroup, "1000", "the pod's fsGroup reaches the guest");
    // encryptionKey is "ephemeral" for every volume (kata-agent mounts anything else in plaintext); the
    // StorageClass's keySource travels as cocostorage.dev/kind (docs/csi.md, "The Kata descriptor").
    assert.equal(mi.metadata.encryptionKey, "ephemeral", "kata-agent's only SecureMount marker");
    assert.equal(mi.metadata["cocostorage.dev/kind"], values.sc.parameters.keySource === "kbs" ? "persistent" : "ephemeral",
      "the StorageClass's keySource reaches Kata's metadata");
    for (const [k, v] of Object.entries(mi.metadata)) {
      if (k !== "cocostorage.dev/kbsResourceUri") assert.ok(!v.startsWith("kbs:"), `a KBS URI only as the hint, not in ${k}`);
    }
    assert.ok(Object.values(mi.metadata).includes(values.sc.parameters.integrity), "the StorageClass's integrity reaches the metadata");
    assert.equal(mi.fstype, values.sc.parameters.fsType);
    assert.doesNotMatch(JSON.stringify(mi), /secret|passphrase|BEGIN|key":\s*"[A-Za-z0-9+/]{32,}/i);
    assert.ok(statSync(target).isDirectory(), "the plugin created the target directory");

    await callAsync(node, "NodeUnpublishVolume", { volume_id: vol.volume_id, target_path: target });
    assert.ok(!existsSync(join(dir, "mountInfo.json")), "unpublish removes mountInfo.json");
    await callAsync(node, "NodeUnstageVolume", { volume_id: vol.volume_id, staging_target_path: staging });
    await callAsync(controller, "DeleteVolume", { volume_id: vol.volume_id });
    assert.ok(!existsSync(mi.device), "DeleteVolume removes the backing file");
  });

  test("SIGTERM drains within the pod's termination grace period", async () => {
    const grace = ds.spec.template.spec.terminationGracePeriodSeconds;
    const exited = new Promise((ok) => proc.once("exit", (code, sig) => ok({ code, sig })));
    proc.kill("SIGTERM");
    const res = await Promise.race([exited, sleep(grace * 1000, "timeout", { ref: false })]);
    assert.notEqual(res, "timeout", `still running after ${grace}s`);
    assert.equal(res.code, 0, logs);
  });
});
