// deploy/manifests/ must be exactly the default chart, rendered (run
// ./regen-manifests.sh after changing the chart), and apply cleanly as a
// kustomization.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildManifests, currentManifests } from "./manifests.mjs";
import { kubectl, manifestsDir, parseYamlStream, readYamlFile, validateObject } from "./lib.mjs";

describe("plain manifests", () => {
  test("deploy/manifests equals the rendered default chart", () => {
    const want = buildManifests();
    const have = currentManifests();
    assert.deepEqual(Object.keys(have).sort(), Object.keys(want).sort(), "file set differs: run deploy/tests/regen-manifests.sh");
    for (const [name, content] of Object.entries(want)) {
      assert.equal(have[name], content, `${name} is stale: run deploy/tests/regen-manifests.sh`);
    }
  });

  test("every manifest validates against the Kubernetes API", () => {
    const files = Object.keys(currentManifests()).filter((f) => f !== "kustomization.yaml");
    let n = 0;
    for (const f of files) {
      for (const { doc } of readYamlFile(join(manifestsDir, f))) {
        validateObject(doc, f);
        n++;
      }
    }
    assert.ok(n >= 8, `validated ${n} objects`);
  });

  test("kustomization.yaml lists every manifest once", () => {
    const [{ doc: k }] = readYamlFile(join(manifestsDir, "kustomization.yaml"));
    assert.equal(k.kind, "Kustomization");
    const files = Object.keys(currentManifests()).filter((f) => f !== "kustomization.yaml").sort();
    assert.deepEqual([...k.resources].sort(), files);
  });

  // kustomize as built into the pinned kubectl (v1.35); it needs no cluster.
  test("kubectl kustomize builds deploy/manifests", () => {
    const r = kubectl(["kustomize", manifestsDir]);
    assert.ok(r.ok, r.stderr);
    const objs = parseYamlStream(r.stdout, "kustomize");
    const files = Object.keys(currentManifests()).filter((f) => f !== "kustomization.yaml");
    const n = files.reduce((acc, f) => acc + readYamlFile(join(manifestsDir, f)).length, 0);
    assert.equal(objs.length, n, "kustomize emits every object of the listed files");
    for (const { doc } of objs) validateObject(doc, "kustomize output");
  });
});
