// Lints (`helm lint --strict`) and renders (`helm template`, the real helm v4)
// the Helm chart with its default values and with every values file in
// values/, checks the coalesced values against the chart's values.schema.json
// with ajv (as well as helm's own schema validation), validates every
// rendered object against the Kubernetes API, and checks the deployment
// contract between objects (names, paths and flags that must agree for the
// driver to work).
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import Ajv from "ajv";
import { chartDir, coalescedValues, dryRunInstall, helm, lintChart, parseYamlStream, renderChart, validateObject, valuesDir } from "./lib.mjs";

const schema = JSON.parse(readFileSync(join(chartDir, "values.schema.json"), "utf8"));
const ajv = new Ajv({ allErrors: true, strict: false });
const validateValues = ajv.compile(schema);

const scenarios = [
  { name: "default", valueFiles: [] },
  ...readdirSync(valuesDir)
    .filter((f) => f.endsWith(".yaml"))
    .sort()
    .map((f) => ({ name: f, valueFiles: [join(valuesDir, f)] })),
  // --set like an operator would on the command line.
  {
    name: "--set kbs class",
    valueFiles: [],
    sets: ["storageClasses.kbs.create=true", "storageClasses.kbs.kbsResourceUri=kbs:///team-a/volumes/db", "node.capacityBytes=5000000000"],
    namespace: "cocostorage-system",
    release: "storage",
  },
  // The kbs class with its default kbsResourceUri: the per-volume template.
  { name: "--set kbs class, default (template) URI", valueFiles: [], sets: ["storageClasses.kbs.create=true"] },
];

const SC_PARAMS = new Set(["keySource", "kbsResourceUri", "fsType", "integrity", "mkfsOptions", "pool"]);
// The Kubernetes sidecars' secret references (ceph-csi's conventions): read
// by the provisioner and kubelet, never by the plugin.
const SECRET_PARAM = /^csi\.storage\.k8s\.io\/(provisioner|controller-expand|node-stage)-secret-(name|namespace)$/;
// A KBS resource URI whose segments may hold the placeholders the plugin
// resolves at CreateVolume (docs/csi.md, "kbsResourceUri templates").
const KBS_SEG = "(?:[A-Za-z0-9._-]|\\$\\{(?:pvc\\.namespace|pvc\\.name|pv\\.name)\\})+";
const KBS_URI = new RegExp(`^kbs:///${KBS_SEG}/${KBS_SEG}/${KBS_SEG}$`);

function argValue(args, flag) {
  const hits = args.filter((a) => a === flag || a.startsWith(`${flag}=`));
  assert.ok(hits.length <= 1, `${flag} given ${hits.length} times`);
  if (!hits.length) return undefined;
  return hits[0].includes("=") ? hits[0].slice(flag.length + 1) : true;
}

function checkContract(objs, values, namespace) {
  const byKind = (k) => objs.filter((o) => o.kind === k);
  const driverName = values.driverName;

  // Namespaced objects go to the release namespace (but the grant to read
  // the Ceph Secret, which lives in the Secret's namespace).
  for (const o of objs) {
    if (o.metadata.name.endsWith("-provisioner-ceph-secret")) {
      assert.equal(o.metadata.namespace, values.storageClasses.rbd.provisionerSecret.namespace);
      continue;
    }
    if (["ServiceAccount", "Role", "RoleBinding", "DaemonSet"].includes(o.kind)) {
      assert.equal(o.metadata.namespace, namespace, `${o.kind}/${o.metadata.name} namespace`);
    }
  }
  // No two objects of the same kind share a name.
  const seen = new Set();
  for (const o of objs) {
    const key = `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
    assert.ok(!seen.has(key), `duplicate ${key}`);
    seen.add(key);
  }

  const csiDrivers = byKind("CSIDriver");
  assert.equal(csiDrivers.length, values.csiDriver.create ? 1 : 0);
  for (const d of csiDrivers) {
    assert.equal(d.metadata.name, driverName);
    assert.equal(d.spec.attachRequired, false);
    assert.equal(d.spec.podInfoOnMount, true);
    assert.deepEqual(d.spec.volumeLifecycleModes, values.csiDriver.volumeLifecycleModes);
    assert.equal(d.spec.storageCapacity, values.csiDriver.storageCapacity);
  }

  for (const sc of byKind("StorageClass")) {
    assert.equal(sc.provisioner, driverName, `StorageClass ${sc.metadata.name} provisioner`);
    assert.equal(sc.volumeBindingMode, "WaitForFirstConsumer");
    for (const k of Object.keys(sc.parameters)) assert.ok(SC_PARAMS.has(k) || SECRET_PARAM.test(k), `StorageClass parameter ${k} is not one the plugin knows`);
    // RBD classes exactly when the plugin runs the RBD backend (the plugin
    // refuses the other kind), each with its pool and both secrets.
    assert.equal("pool" in sc.parameters, values.backend === "rbd", `${sc.metadata.name}: pool iff backend rbd`);
    if (values.backend === "rbd") {
      for (const s of ["provisioner", "node-stage"]) assert.ok(sc.parameters[`csi.storage.k8s.io/${s}-secret-name`], `${s} secret`);
    }
    for (const [k, v] of Object.entries(sc.parameters)) assert.equal(typeof v, "string", `parameter ${k} must be a string`);
    assert.ok(["ephemeral", "kbs"].includes(sc.parameters.keySource));
    assert.ok(["ext4", "xfs"].includes(sc.parameters.fsType));
    assert.ok(["hmac-sha256", "none", "aegis128", "aes-gcm"].includes(sc.parameters.integrity));
    if (sc.parameters.keySource === "kbs") assert.match(sc.parameters.kbsResourceUri, KBS_URI);
    else assert.equal(sc.parameters.kbsResourceUri, undefined);
  }
  const defaults = byKind("StorageClass").filter((sc) => sc.metadata.annotations?.["storageclass.kubernetes.io/is-default-class"] === "true");
  assert.ok(defaults.length <= 1, "at most one default StorageClass");

  const [ds, ...moreDs] = byKind("DaemonSet");
  assert.ok(ds && !moreDs.length, "exactly one DaemonSet");
  const pod = ds.spec.template.spec;
  // The API server rejects a selector that does not match the template.
  for (const [k, v] of Object.entries(ds.spec.selector.matchLabels)) {
    assert.equal(ds.spec.template.metadata.labels[k], v, `selector label ${k}`);
  }
  // backend rbd: the host network (the kernel RBD client and udev), as ceph-csi.
  assert.equal(pod.hostNetwork === true, values.backend === "rbd", "hostNetwork iff backend rbd");
  assert.notEqual(pod.hostPID, true, "no hostPID");

  // ServiceAccount: created here, or named explicitly.
  if (values.serviceAccount.create) {
    assert.ok(byKind("ServiceAccount").some((sa) => sa.metadata.name === pod.serviceAccountName), "the pod's ServiceAccount is rendered");
  } else {
    assert.equal(pod.serviceAccountName, values.serviceAccount.name);
  }
  // RBAC subjects point at that ServiceAccount.
  for (const b of [...byKind("ClusterRoleBinding"), ...byKind("RoleBinding")]) {
    assert.deepEqual(b.subjects, [{ kind: "ServiceAccount", name: pod.serviceAccountName, namespace }]);
    const role = objs.find((o) => o.kind === b.roleRef.kind && o.metadata.name === b.roleRef.name);
    assert.ok(role, `${b.kind} ${b.metadata.name} refers to a rendered ${b.roleRef.kind}`);
  }
  // Least privilege: no wildcards, no secrets, nothing that writes pods.
  for (const r of [...byKind("ClusterRole"), ...byKind("Role")]) {
    for (const rule of r.rules) {
      for (const f of ["apiGroups", "resources", "verbs"]) assert.ok(!rule[f].includes("*"), `${r.metadata.name}: wildcard in ${f}`);
      if (rule.resources.includes("secrets")) {
        // Only the Ceph Secret the rbd class names, get only.
        assert.equal(values.backend, "rbd", `${r.metadata.name}: secrets access`);
        assert.deepEqual(rule.verbs, ["get"]);
        assert.deepEqual(rule.resourceNames, [values.storageClasses.rbd.provisionerSecret.name]);
        assert.equal(r.metadata.namespace, values.storageClasses.rbd.provisionerSecret.namespace);
      }
      if (rule.resources.includes("pods")) assert.deepEqual(rule.verbs, ["get"]);
    }
  }

  // Volumes: every mount refers to a declared volume; nothing propagates
  // mounts back to the host; every container is unprivileged.
  const volumes = new Map(pod.volumes.map((v) => [v.name, v]));
  const containers = new Map(pod.containers.map((c) => [c.name, c]));
  assert.deepEqual([...containers.keys()].sort(), ["cocostorage-csi", "csi-provisioner", "liveness-probe", "node-driver-registrar"]);
  for (const c of pod.containers) {
    for (const m of c.volumeMounts ?? []) {
      assert.ok(volumes.has(m.name), `${c.name}: mount of undeclared volume ${m.name}`);
      assert.notEqual(m.mountPropagation, "Bidirectional", `${c.name}: ${m.name} must not be Bidirectional`);
    }
    const sc = c.securityContext;
    assert.equal(sc.readOnlyRootFilesystem, true, `${c.name} readOnlyRootFilesystem`);
    if (values.backend === "rbd" && c.name === "cocostorage-csi") {
      // rbd device map (sysfs writes, /dev nodes, modprobe): privileged, as
      // ceph-csi's node plugin; the sidecars stay unprivileged.
      assert.equal(sc.privileged, true, "the RBD plugin maps images");
      continue;
    }
    assert.equal(sc.privileged, false, `${c.name} privileged`);
    assert.equal(sc.allowPrivilegeEscalation, false, `${c.name} allowPrivilegeEscalation`);
    // The plugin alone keeps CAP_LINUX_IMMUTABLE: it seals publish targets.
    const caps = c.name === "cocostorage-csi" ? { drop: ["ALL"], add: ["LINUX_IMMUTABLE"] } : { drop: ["ALL"] };
    assert.deepEqual(sc.capabilities, caps, `${c.name} capabilities`);
    assert.ok(c.resources?.requests?.memory && c.resources?.limits?.memory, `${c.name} memory request and limit`);
    // Pinned images: a tag other than latest, or a digest.
    assert.match(c.image, /(@sha256:[0-9a-f]{64}|:v?[0-9][\w.-]*)$/, `${c.name} image ${c.image} is not pinned`);
  }
  for (const name of ["node-driver-registrar", "csi-provisioner", "liveness-probe"]) {
    assert.match(containers.get(name).image, /^registry\.k8s\.io\/sig-storage\//, `${name} comes from registry.k8s.io`);
  }

  const mountOf = (c, vol) => containers.get(c).volumeMounts.find((m) => m.name === vol);
  const hostPathOf = (vol) => volumes.get(vol).hostPath?.path;

  // The CSI socket: one host dir, /csi in every container, and the path the
  // registrar gives kubelet is that host dir.
  for (const c of pod.containers) assert.equal(mountOf(c.name, "socket-dir")?.mountPath, "/csi", `${c.name} mounts the socket dir at /csi`);
  const kubeletDir = values.kubeletDir.replace(/\/+$/, "");
  assert.equal(hostPathOf("socket-dir"), `${kubeletDir}/plugins/${driverName}`);
  const reg = containers.get("node-driver-registrar").args;
  assert.equal(argValue(reg, "--csi-address"), "/csi/csi.sock");
  assert.equal(argValue(reg, "--kubelet-registration-path"), `${hostPathOf("socket-dir")}/csi.sock`);
  assert.equal(hostPathOf("registration-dir"), `${kubeletDir}/plugins_registry`);
  assert.equal(mountOf("node-driver-registrar", "registration-dir").mountPath, "/registration");

  // The plugin: flags agree with values, and every host path it writes into
  // Kata's mountInfo.json or receives from kubelet is mounted at the same
  // path as on the host.
  const plugin = containers.get("cocostorage-csi");
  const pa = plugin.args;
  assert.equal(argValue(pa, "--endpoint"), "unix:///csi/csi.sock");
  assert.equal(argValue(pa, "--node-id"), "$(NODE_NAME)");
  assert.deepEqual(plugin.env.find((e) => e.name === "NODE_NAME").valueFrom, { fieldRef: { fieldPath: "spec.nodeName" } });
  assert.equal(argValue(pa, "--driver-name"), driverName);
  // No backing files on the node with the RBD backend.
  if (values.backend === "rbd") assert.equal(argValue(pa, "--backing-root"), undefined);
  for (const [flag, vol, want] of [
    ...(values.backend === "rbd" ? [] : [["--backing-root", "backing-root", values.node.backingRoot]]),
    ["--state-dir", "state-dir", values.node.stateDir],
    ["--kata-direct-volume-root", "kata-direct-volumes", values.node.kataDirectVolumeRoot],
  ]) {
    assert.equal(argValue(pa, flag), want, flag);
    assert.equal(hostPathOf(vol), want, `${vol} host path`);
    assert.equal(mountOf("cocostorage-csi", vol).mountPath, want, `${vol} is mounted at its host path`);
  }
  for (const vol of ["kubelet-pods", "kubelet-csi-publish"]) {
    assert.ok(hostPathOf(vol).startsWith(`${kubeletDir}/`), `${vol} is under the kubelet dir`);
    assert.equal(mountOf("cocostorage-csi", vol).mountPath, hostPathOf(vol), `${vol} is mounted at its host path`);
  }
  assert.equal(argValue(pa, "--max-volumes-per-node"), String(values.node.maxVolumesPerNode));
  if (values.node.capacityBytes) assert.equal(argValue(pa, "--capacity-bytes"), String(values.node.capacityBytes));
  else assert.equal(argValue(pa, "--capacity-bytes"), undefined);
  for (const a of pa) assert.doesNotMatch(a, /e\+\d/, `${a}: number printed in float notation`);

  // Only the plugin writes host paths; the sidecars see only the socket (and
  // the registrar its registration dir).
  for (const c of pod.containers) {
    if (c.name === "cocostorage-csi") continue;
    for (const m of c.volumeMounts) assert.ok(["socket-dir", "registration-dir"].includes(m.name), `${c.name} mounts ${m.name}`);
  }

  // Liveness: the sidecar serves /healthz on the port the plugin's probe uses.
  const lp = containers.get("liveness-probe").args;
  assert.equal(argValue(lp, "--csi-address"), "/csi/csi.sock");
  const hz = plugin.ports.find((p) => p.name === plugin.livenessProbe.httpGet.port);
  assert.ok(hz, "the plugin's liveness probe names a declared port");
  assert.equal(argValue(lp, "--health-port"), String(hz.containerPort));
  const regC = containers.get("node-driver-registrar");
  const regPort = regC.ports.find((p) => p.name === regC.livenessProbe.httpGet.port);
  assert.equal(argValue(reg, "--http-endpoint"), `:${regPort.containerPort}`);
  const ports = pod.containers.flatMap((c) => (c.ports ?? []).map((p) => p.containerPort));
  assert.equal(new Set(ports).size, ports.length, "container ports are unique in the pod");

  // The provisioner in distributed (per-node) mode with topology and capacity.
  const prov = containers.get("csi-provisioner");
  const pv = prov.args;
  assert.equal(argValue(pv, "--csi-address"), "/csi/csi.sock");
  assert.equal(argValue(pv, "--node-deployment"), "true");
  assert.ok(argValue(pv, "--feature-gates").split(",").includes("Topology=true"), "Topology feature gate on");
  assert.equal(argValue(pv, "--strict-topology"), "true");
  assert.equal(argValue(pv, "--leader-election"), undefined, "no leader election in distributed mode");
  assert.equal(argValue(pv, "--node-deployment-immediate-binding"), "false", "node-local volumes bind WaitForFirstConsumer only");
  const env = new Map(prov.env.map((e) => [e.name, e.valueFrom?.fieldRef?.fieldPath]));
  assert.equal(env.get("NODE_NAME"), "spec.nodeName");
  // A kbsResourceUri template is resolved from the PVC/PV names that only
  // --extra-create-metadata passes to CreateVolume.
  if (byKind("StorageClass").some((sc) => sc.parameters.kbsResourceUri?.includes("${"))) {
    assert.equal(argValue(pv, "--extra-create-metadata"), "true", "a kbsResourceUri template needs --extra-create-metadata");
  }
  if (values.csiDriver.storageCapacity) {
    assert.equal(argValue(pv, "--enable-capacity"), "true");
    assert.equal(argValue(pv, "--capacity-ownerref-level"), "1", "the DaemonSet (the pod's controller) owns the CSIStorageCapacity objects");
    assert.equal(env.get("POD_NAME"), "metadata.name");
    assert.equal(env.get("NAMESPACE"), "metadata.namespace");
    if (values.rbac.create) {
      const role = byKind("Role")[0];
      assert.ok(role?.rules.some((r) => r.apiGroups.includes("storage.k8s.io") && r.resources.includes("csistoragecapacities") && r.verbs.includes("create")));
      assert.ok(role?.rules.some((r) => r.resources.includes("pods") && r.verbs.includes("get")), "ownerref lookup of the pod");
    }
  } else {
    assert.equal(argValue(pv, "--enable-capacity"), undefined);
  }
  if (values.rbac.create) {
    const cr = byKind("ClusterRole")[0];
    const can = (res, verb) => cr.rules.some((r) => r.resources.includes(res) && r.verbs.includes(verb));
    for (const [res, verb] of [["persistentvolumes", "create"], ["persistentvolumes", "delete"], ["persistentvolumeclaims", "watch"], ["storageclasses", "get"], ["csinodes", "get"], ["nodes", "get"], ["events", "create"]]) {
      assert.ok(can(res, verb), `provisioner may ${verb} ${res}`);
    }
  }

  // RuntimeClasses point at the CoCo handlers.
  for (const rc of byKind("RuntimeClass")) assert.match(rc.handler, /^kata-/);
}

describe("helm chart", () => {
  for (const s of scenarios) {
    test(`renders and validates: ${s.name}`, () => {
      const namespace = s.namespace ?? "kube-system";
      const release = { ...s, namespace, name: s.release ?? "cocostorage" };
      const dry = dryRunInstall(release);
      assert.ok(dry.ok, dry.stderr);
      const values = dry.values;
      assert.ok(validateValues(values), `values.schema.json: ${ajv.errorsText(validateValues.errors)}`);
      const r = renderChart(release);
      assert.ok(r.ok, r.stderr);
      const objs = parseYamlStream(r.stdout, s.name).map(({ doc, source }) => {
        validateObject(doc, source);
        return doc;
      });
      assert.ok(objs.length >= 1, "renders objects");
      checkContract(objs, values, namespace);
      // NOTES.txt, which helm prints after installing, renders too.
      assert.match(dry.notes, new RegExp(`CSI driver: +${values.driverName.replace(/\./g, "\\.")}`));
      for (const sc of objs.filter((o) => o.kind === "StorageClass")) assert.ok(dry.notes.includes(sc.metadata.name), `NOTES names ${sc.metadata.name}`);
    });

    test(`helm lint --strict: ${s.name}`, () => {
      const r = lintChart(s);
      assert.ok(r.ok, `${r.stdout}${r.stderr}`);
      assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    });
  }

  test("default values are valid and render the documented objects", () => {
    const r = renderChart();
    const kinds = parseYamlStream(r.stdout).map(({ doc }) => `${doc.kind}/${doc.metadata.name}`);
    assert.deepEqual(kinds.sort(), [
      "CSIDriver/csi.cocostorage.dev",
      "ClusterRole/cocostorage-provisioner",
      "ClusterRoleBinding/cocostorage-provisioner",
      "DaemonSet/cocostorage-node",
      "Role/cocostorage-provisioner",
      "RoleBinding/cocostorage-provisioner",
      "ServiceAccount/cocostorage-node",
      "StorageClass/cocostorage-ephemeral",
      "ValidatingAdmissionPolicy/cocostorage-confidential-pods",
      "ValidatingAdmissionPolicy/cocostorage-confidential-statefulsets",
      "ValidatingAdmissionPolicyBinding/cocostorage-confidential-pods",
      "ValidatingAdmissionPolicyBinding/cocostorage-confidential-statefulsets",
    ]);
  });

  test("every values.yaml key is typed in values.schema.json", () => {
    // additionalProperties:false everywhere means an undocumented key fails;
    // this checks the converse: the defaults themselves pass.
    const values = coalescedValues();
    assert.ok(validateValues(values), ajv.errorsText(validateValues.errors));
  });

  const invalidDir = join(valuesDir, "invalid");
  for (const f of readdirSync(invalidDir).filter((x) => x.endsWith(".yaml")).sort()) {
    test(`rejects invalid values: ${f}`, () => {
      const text = readFileSync(join(invalidDir, f), "utf8");
      const expect = /# expect: (.+)/.exec(text)?.[1];
      assert.ok(expect, `${f} needs a "# expect:" line`);
      const valueFiles = [join(invalidDir, f)];
      // Our ajv run on the coalesced values...
      const values = coalescedValues({ valueFiles, skipSchema: true });
      assert.equal(validateValues(values), false, `${f} passed values.schema.json`);
      assert.match(ajv.errorsText(validateValues.errors), new RegExp(expect), "schema error names the problem");
      // ...helm's own schema validation (template, install)...
      const r = renderChart({ valueFiles });
      assert.equal(r.ok, false, `helm template accepted ${f}`);
      assert.match(r.stderr, /values don't meet the specifications of the schema/);
      assert.match(r.stderr, new RegExp(expect));
      // ...and helm lint --strict.
      const lint = lintChart({ valueFiles });
      assert.equal(lint.ok, false, `helm lint --strict accepted ${f}`);
      assert.match(lint.stdout + lint.stderr, new RegExp(expect));
    });
  }

  // The chart and the plugin are written in parallel: check the chart's
  // flags and StorageClass keys against what cocostorage-csi actually parses.
  const pluginMain = join(chartDir, "..", "..", "..", "csi-driver", "src", "main.cc");
  const pluginParams = join(chartDir, "..", "..", "..", "csi-driver", "src", "params.cc");
  test("plugin flags and StorageClass keys are ones cocostorage-csi parses", { skip: !(existsSync(pluginMain) && existsSync(pluginParams)) && "csi-driver sources absent" }, () => {
    const main = readFileSync(pluginMain, "utf8");
    // CLI11: app.add_option("--name", ...) / app.add_flag("--name", ...).
    const known = new Set([...main.matchAll(/add_(?:option|flag)\("--([a-z-]+)"/g)].map((m) => m[1]));
    assert.ok(known.has("endpoint") && known.size > 5, "found the plugin's flag list");
    for (const file of ["full.yaml", "rbd.yaml"]) {
      const full = renderChart({ valueFiles: [join(valuesDir, file)] });
      assert.ok(full.ok, full.stderr);
      const ds = parseYamlStream(full.stdout).find(({ doc }) => doc.kind === "DaemonSet").doc;
      const plugin = ds.spec.template.spec.containers.find((c) => c.name === "cocostorage-csi");
      for (const a of plugin.args) assert.ok(known.has(a.replace(/^--/, "").split("=")[0]), `${file}: plugin does not parse ${a}`);
    }
    const params = new Set([...readFileSync(pluginParams, "utf8").matchAll(/constexpr char k\w+\[\] = "(\w+)"/g)].map((m) => m[1]));
    for (const k of SC_PARAMS) assert.ok(params.has(k), `plugin does not know StorageClass parameter ${k}`);
  });

  // Chart.yaml's kubeVersion (>= 1.30) is what the objects need: GA
  // admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy, storage v1
  // CSIStorageCapacity. helm lint checks for deprecated/removed APIs at the
  // version it is given.
  test("lints clean for the oldest supported Kubernetes and refuses older ones", () => {
    const lint = helm(["lint", "--strict", "--kube-version", "1.30.0", chartDir, "--set", "runtimeClasses.create=true"]);
    assert.ok(lint.ok, lint.stdout + lint.stderr);
    const old = helm(["template", "x", chartDir, "--kube-version", "1.29.9"]);
    assert.equal(old.ok, false);
    assert.match(old.stderr, /requires kubeVersion: >=1\.30/);
  });

  test("kbs class without a URI fails to render even without the schema", () => {
    const r = renderChart({ sets: ["storageClasses.kbs.create=true", "storageClasses.kbs.kbsResourceUri="], skipSchema: true });
    assert.equal(r.ok, false);
    assert.match(r.stderr, /kbsResourceUri is required/);
  });

  test("the kbs class gives every claim its own key by default", () => {
    const r = renderChart({ sets: ["storageClasses.kbs.create=true"] });
    assert.ok(r.ok, r.stderr);
    const objs = parseYamlStream(r.stdout).map(({ doc }) => doc);
    const sc = objs.find((o) => o.kind === "StorageClass" && o.parameters.keySource === "kbs");
    assert.equal(sc.parameters.kbsResourceUri, "kbs:///${pvc.namespace}/volume-keys/${pvc.name}");
    const prov = objs.find((o) => o.kind === "DaemonSet").spec.template.spec.containers.find((c) => c.name === "csi-provisioner");
    assert.equal(argValue(prov.args, "--extra-create-metadata"), "true");
  });

  test("a kbsResourceUri template without extraCreateMetadata fails to render", () => {
    const r = renderChart({ sets: ["storageClasses.kbs.create=true", "node.provisioner.extraCreateMetadata=false"] });
    assert.equal(r.ok, false);
    assert.match(r.stderr, /is a template: it needs node\.provisioner\.extraCreateMetadata=true/);
    // A fixed URI needs no metadata.
    const fixed = renderChart({ sets: ["storageClasses.kbs.create=true", "storageClasses.kbs.kbsResourceUri=kbs:///a/b/c", "node.provisioner.extraCreateMetadata=false"] });
    assert.ok(fixed.ok, fixed.stderr);
  });

  test("backend rbd: the plugin serves the cluster, maps images, and only the rbd class renders", () => {
    const r = renderChart({ valueFiles: [join(valuesDir, "rbd.yaml")] });
    assert.ok(r.ok, r.stderr);
    const objs = parseYamlStream(r.stdout).map(({ doc }) => doc);
    const pod = objs.find((o) => o.kind === "DaemonSet").spec.template.spec;
    const plugin = pod.containers.find((c) => c.name === "cocostorage-csi");
    assert.equal(argValue(plugin.args, "--backend"), "rbd");
    assert.equal(argValue(plugin.args, "--rbd-monitors"), "v2:10.0.0.1:3300,v2:10.0.0.2:3300");
    assert.equal(argValue(plugin.args, "--rbd-secret-dir"), "/etc/cocostorage/rbd");
    assert.equal(argValue(plugin.args, "--backing-root"), undefined);
    const mounts = new Map(plugin.volumeMounts.map((m) => [m.mountPath, m.name]));
    for (const p of ["/sys", "/dev", "/lib/modules", "/etc/cocostorage/rbd"]) assert.ok(mounts.has(p), `mounts ${p}`);
    assert.equal(pod.volumes.find((v) => v.name === mounts.get("/etc/cocostorage/rbd")).secret.secretName, "cocostorage-ceph");
    assert.equal(pod.volumes.find((v) => v.name === mounts.get("/dev")).hostPath.path, "/dev");
    const classes = objs.filter((o) => o.kind === "StorageClass");
    assert.deepEqual(classes.map((c) => c.metadata.name), ["cocostorage-rbd"]);
    assert.equal(classes[0].parameters.pool, "replicapool");
    assert.equal(classes[0].parameters.keySource, "kbs");
    assert.equal(classes[0].parameters.monitors, undefined);  // the plugin's
    assert.equal(pod.hostNetwork, true);
    const secretRole = objs.find((o) => o.kind === "Role" && o.metadata.namespace === "rook-ceph");
    assert.deepEqual(secretRole.rules, [{ apiGroups: [""], resources: ["secrets"], resourceNames: ["rook-csi-rbd-provisioner"], verbs: ["get"] }]);
    for (const [sets, why] of [
      [["backend=rbd"], /storageClasses\.ephemeral needs node-local backing/],
      [["storageClasses.rbd.create=true"], /storageClasses\.rbd needs backend: rbd/],
      [["backend=rbd", "storageClasses.ephemeral.create=false"], /rbd\.monitors is required/],
      [["backend=rbd", "storageClasses.ephemeral.create=false", "rbd.monitors=v2:10.0.0.1:3300"], /needs rbd\.secretName/],
    ]) {
      const bad = renderChart({ sets, skipSchema: true });
      assert.equal(bad.ok, false, sets.join(" "));
      assert.match(bad.stderr, why);
    }
  });

  test("serviceAccount.create=false needs a name", () => {
    const r = renderChart({ sets: ["serviceAccount.create=false"], skipSchema: true });
    assert.equal(r.ok, false);
    assert.match(r.stderr, /serviceAccount.name is required/);
  });
});
