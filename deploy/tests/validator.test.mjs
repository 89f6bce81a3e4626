// The validators themselves must reject what the API server rejects;
// otherwise every other test here passes vacuously.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { parseYamlStream, renderChart, validateObject } from "./lib.mjs";

const r = renderChart();
const daemonSet = () => structuredClone(parseYamlStream(r.stdout).find(({ doc }) => doc.kind === "DaemonSet").doc);
const csiDriver = () => structuredClone(parseYamlStream(r.stdout).find(({ doc }) => doc.kind === "CSIDriver").doc);

describe("validator self-test", () => {
  test("accepts the rendered objects", () => {
    validateObject(daemonSet());
    validateObject(csiDriver());
  });
  const cases = [
    ["wrong type", (o) => (o.spec.template.spec.containers[0].securityContext.capabilities.drop = "ALL"), /must be array/],
    ["unknown field (typo)", (o) => (o.spec.template.spec.containers[0].volumeMount = []), /unknown field "volumeMount"/],
    ["unknown nested field", (o) => (o.spec.template.spec.volumes[0].hostPath.mode = 493), /unknown field "mode"/],
    ["missing required field", (o) => delete o.spec.selector, /required property '?selector/],
    ["missing container name", (o) => delete o.spec.template.spec.containers[1].name, /containers\/1 must have required property '?name/],
    ["bad int-or-string", (o) => (o.spec.template.spec.containers[0].livenessProbe.httpGet.port = true), /port/],
    ["bad quantity", (o) => (o.spec.template.spec.containers[0].resources.limits.memory = "lots"), /memory/],
    ["unknown kind", (o) => (o.kind = "DaemonSett"), /unknown Kubernetes type/],
    ["wrong apiVersion", (o) => (o.apiVersion = "extensions/v1beta2"), /unknown Kubernetes type/],
  ];
  for (const [name, mutate, re] of cases) {
    test(`rejects ${name}`, () => {
      const o = daemonSet();
      mutate(o);
      assert.throws(() => validateObject(o), re);
    });
  }
  test("rejects a CSIDriver field that does not exist", () => {
    const o = csiDriver();
    o.spec.attachRequire = false;
    assert.throws(() => validateObject(o), /unknown field "attachRequire"/);
  });
  test("rejects duplicate keys in YAML", () => {
    assert.throws(() => parseYamlStream("a: 1\na: 2\n", "dup"), /[Dd]uplicate|unique/);
  });
});
