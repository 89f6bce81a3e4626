// The examples in deploy/examples/ validate against the Kubernetes API and
// use the driver the way it works: a CoCo RuntimeClass, one of our
// StorageClasses, node-local access modes.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { examplesDir, kubectl, parseYamlStream, readYamlFile, renderChart, validateObject } from "./lib.mjs";

const files = readdirSync(examplesDir).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml").sort();
const all = files.flatMap((f) => readYamlFile(join(examplesDir, f)).map(({ doc }) => ({ f, doc })));

// StorageClasses that exist after installing the chart (kbs enabled) plus
// those the examples define.
const chart = renderChart({ sets: ["storageClasses.kbs.create=true", "storageClasses.kbs.kbsResourceUri=kbs:///default/cocostorage/volume-key"] });
const knownClasses = new Set([
  ...parseYamlStream(chart.stdout).filter(({ doc }) => doc.kind === "StorageClass").map(({ doc }) => doc.metadata.name),
  ...all.filter(({ doc }) => doc.kind === "StorageClass").map(({ doc }) => doc.metadata.name),
]);

const SC_KEYS = new Set(["keySource", "kbsResourceUri", "fsType", "integrity", "mkfsOptions"]);

function podSpecs(doc) {
  if (doc.kind === "Pod") return [doc.spec];
  if (["StatefulSet", "Deployment", "DaemonSet", "Job", "ReplicaSet"].includes(doc.kind)) return [doc.spec.template.spec];
  return [];
}

function claimSpecs(doc) {
  const out = [];
  if (doc.kind === "PersistentVolumeClaim") out.push(doc.spec);
  if (doc.kind === "StatefulSet") out.push(...(doc.spec.volumeClaimTemplates ?? []).map((t) => t.spec));
  for (const spec of podSpecs(doc)) {
    for (const v of spec.volumes ?? []) if (v.ephemeral) out.push(v.ephemeral.volumeClaimTemplate.spec);
  }
  return out;
}

describe("examples", () => {
  test("there are examples for an ephemeral pod, a StatefulSet and a block consumer", () => {
    assert.ok(all.some(({ doc }) => doc.kind === "Pod" && doc.spec.volumes?.some((v) => v.ephemeral)));
    assert.ok(all.some(({ doc }) => doc.kind === "StatefulSet" && doc.spec.volumeClaimTemplates?.length));
    assert.ok(all.some(({ doc }) => doc.kind === "PersistentVolumeClaim" && doc.spec.volumeMode === "Block"));
  });

  for (const f of files) {
    test(`${f} validates against the Kubernetes API`, () => {
      for (const { doc } of all.filter((x) => x.f === f)) validateObject(doc, f);
    });
  }

  test("claims use our StorageClasses with node-local access modes", () => {
    const claims = all.flatMap(({ doc }) => claimSpecs(doc));
    assert.ok(claims.length >= 3);
    for (const c of claims) {
      assert.ok(knownClasses.has(c.storageClassName), `unknown StorageClass ${c.storageClassName}`);
      // RWOP reaches the plugin as SINGLE_NODE_SINGLE_WRITER, RWO as
      // SINGLE_NODE_MULTI_WRITER (the plugin advertises that capability);
      // multi-node modes cannot work with a device handed to one VM.
      for (const m of c.accessModes) assert.ok(["ReadWriteOnce", "ReadWriteOncePod"].includes(m), `access mode ${m}`);
    }
  });

  test("pods with our volumes run in a confidential Kata RuntimeClass", () => {
    for (const { f, doc } of all) {
      for (const spec of podSpecs(doc)) {
        assert.match(spec.runtimeClassName ?? "", /^kata-qemu-(snp|tdx)$/, `${f}: ${doc.kind}/${doc.metadata.name}`);
        // Block volumes are consumed as devices, filesystem ones as mounts.
        for (const c of spec.containers) {
          for (const d of c.volumeDevices ?? []) assert.ok(spec.volumes.some((v) => v.name === d.name));
          for (const m of c.volumeMounts ?? []) {
            assert.ok(spec.volumes?.some((v) => v.name === m.name) || doc.spec.volumeClaimTemplates?.some((t) => t.metadata.name === m.name), `${f}: mount ${m.name}`);
          }
        }
      }
    }
  });

  test("inline CSI volumes use our driver with the StorageClass keys plus size", () => {
    const inline = all.flatMap(({ doc }) => podSpecs(doc).flatMap((s) => (s.volumes ?? []).filter((v) => v.csi)));
    assert.ok(inline.length >= 1, "an inline ephemeral example exists");
    for (const v of inline) {
      assert.equal(v.csi.driver, "csi.cocostorage.dev");
      for (const k of Object.keys(v.csi.volumeAttributes)) assert.ok(SC_KEYS.has(k) || k === "size", `attribute ${k}`);
      assert.equal(v.csi.volumeAttributes.keySource, "ephemeral", "inline volumes must use ephemeral keys");
      assert.match(v.csi.volumeAttributes.size, /^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$/);
    }
  });

  test("PVCs referenced by pods exist in the same example", () => {
    for (const { f, doc } of all) {
      for (const spec of podSpecs(doc)) {
        for (const v of spec.volumes ?? []) {
          if (!v.persistentVolumeClaim) continue;
          assert.ok(all.some((x) => x.f === f && x.doc.kind === "PersistentVolumeClaim" && x.doc.metadata.name === v.persistentVolumeClaim.claimName), `${f}: claim ${v.persistentVolumeClaim.claimName}`);
        }
      }
    }
  });

  test("KBS StorageClasses give every volume its own key", () => {
    const kbs = all.filter(({ doc }) => doc.kind === "StorageClass" && doc.parameters?.keySource === "kbs");
    assert.ok(kbs.length >= 1, "a KBS StorageClass example exists");
    for (const { f, doc } of kbs) {
      // A fixed URI would hand one key to every claim of the class.
      assert.match(doc.parameters.kbsResourceUri, /\$\{(pvc\.name|pv\.name)\}/, `${f}: kbsResourceUri is not per volume`);
      assert.doesNotMatch(doc.parameters.kbsResourceUri.replace(/\$\{(pvc\.namespace|pvc\.name|pv\.name)\}/g, ""), /\$/, `${f}: unknown placeholder`);
    }
  });

  test("kubectl kustomize builds deploy/examples", () => {
    const r = kubectl(["kustomize", examplesDir]);
    assert.ok(r.ok, r.stderr);
    const n = parseYamlStream(r.stdout, "kustomize").length;
    assert.equal(n, all.length, "the kustomization lists every example object");
  });
});
