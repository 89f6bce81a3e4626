// deploy/manifests/ must be exactly the default chart, rendered (run
// ./regen-manifests.sh after changing the chart), and apply cleanly as a
// kustomization.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { join } from "node:path";
import { buildManifests, currentManifests } from "./manifests.mjs";
import { manifestsDir, parseYamlStream, readYamlFile, validateObject } from "./lib.mjs";

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

  // kustomize as built into kubectl, when the machine has kubectl (the cpp
  // machine image does); it needs no cluster.
  const kubectl = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" });
  test("kubectl kustomize builds deploy/manifests", { skip: kubectl.status !== 0 && "kubectl not installed" }, () => {
    const out = execFileSync("kubectl", ["kustomize", manifestsDir], { encoding: "utf8" });
    const objs = parseYamlStream(out, "kustomize");
    assert.ok(objs.length >= 8);
    for (const { doc } of objs) validateObject(doc, "kustomize output");
  });
});
