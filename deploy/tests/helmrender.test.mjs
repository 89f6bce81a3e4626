// helmrender must behave like `helm template` where charts can tell: this
// fixture chart exercises Helm semantics (values as float64, so a bare
// 1000000 prints as 1e+06; missingkey=zero with "<no value>" blanked;
// --set null deleting a key; toYaml key order; include/tpl/required;
// .Chart/.Release/.Template; install order by kind). The golden output
// fixtures/semantics/expected.yaml is what Helm 3 prints for this chart,
// reviewed by hand against Helm's documented behaviour (no helm binary here).
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { helmrender, testsDir } from "./lib.mjs";

const fixture = join(testsDir, "fixtures", "semantics");

describe("helmrender", () => {
  test("renders the semantics fixture exactly like helm template", () => {
    const r = helmrender(["--name", "rel", "--namespace", "ns", "--set", "removed=null", fixture]);
    assert.ok(r.ok, r.stderr);
    assert.equal(r.stdout, readFileSync(join(fixture, "expected.yaml"), "utf8"));
  });

  test("required fails the render with its message", () => {
    const r = helmrender(["--set", "str=", fixture]);
    assert.equal(r.ok, false);
    assert.match(r.stderr, /str is required/);
  });

  test("a missing values file fails the render", () => {
    const r = helmrender(["-f", "/nonexistent/values.yaml", fixture]);
    assert.equal(r.ok, false);
  });

  test("values files are coalesced over values.yaml", () => {
    const r = helmrender(["--show-values", "-f", join(testsDir, "values", "external-sa.yaml"), join(testsDir, "..", "helm", "cocostorage")]);
    assert.ok(r.ok, r.stderr);
    const v = JSON.parse(r.stdout);
    assert.equal(v.serviceAccount.create, false); // from the file
    assert.equal(v.serviceAccount.name, "existing-csi-sa");
    assert.deepEqual(v.serviceAccount.annotations, {}); // kept from values.yaml
    assert.equal(v.node.maxVolumesPerNode, 64);
  });
});
