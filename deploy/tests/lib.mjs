// Shared helpers of the deploy tests: render the chart with helmrender (Go
// text/template + sprig, see helmrender/main.go), parse YAML streams, and
// validate objects against the Kubernetes API.
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
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import * as k8s from "kubernetes-models";
import * as models from "@kubernetes/client-node/dist/gen/models/all.js";

export const testsDir = dirname(fileURLToPath(import.meta.url));
export const deployDir = resolve(testsDir, "..");
export const chartDir = join(deployDir, "helm", "cocostorage");
export const manifestsDir = join(deployDir, "manifests");
export const examplesDir = join(deployDir, "examples");
export const valuesDir = join(testsDir, "values");

// The release the plain manifests are rendered as (keep in sync with
// regen-manifests.sh, which calls renderManifests below).
export const MANIFEST_RELEASE = { name: "cocostorage", namespace: "kube-system" };

let rendererPath = process.env.HELMRENDER;

// Builds helmrender with Debian's Go and sprig (GOPATH mode, offline) unless
// HELMRENDER points at a built one (ctest builds it once as a fixture).
export function renderer() {
  if (rendererPath && existsSync(rendererPath)) return rendererPath;
  const out = join(process.env.HELMRENDER_BUILD_DIR ?? join(testsDir, ".build"), "helmrender");
  mkdirSync(dirname(out), { recursive: true });
  execFileSync("go", ["build", "-o", out, "."], {
    cwd: join(testsDir, "helmrender"),
    env: {
      ...process.env,
      GO111MODULE: "off",
      CGO_ENABLED: "0",
      GOPATH: "/usr/share/gocode",
      GOFLAGS: "",
      GOCACHE: process.env.GOCACHE ?? join(dirname(out), "gocache"),
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  rendererPath = out;
  return out;
}

// Runs helmrender; returns {ok, stdout, stderr}.
export function helmrender(args) {
  try {
    const stdout = execFileSync(renderer(), args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    return { ok: true, stdout, stderr: "" };
  } catch (e) {
    return { ok: false, stdout: e.stdout ?? "", stderr: e.stderr ?? String(e) };
  }
}

export function renderChart({ valueFiles = [], sets = [], name = MANIFEST_RELEASE.name, namespace = MANIFEST_RELEASE.namespace } = {}) {
  const args = ["--name", name, "--namespace", namespace];
  for (const f of valueFiles) args.push("-f", f);
  for (const s of sets) args.push("--set", s);
  args.push(chartDir);
  return helmrender(args);
}

export function coalescedValues({ valueFiles = [], sets = [] } = {}) {
  const args = ["--show-values"];
  for (const f of valueFiles) args.push("-f", f);
  for (const s of sets) args.push("--set", s);
  args.push(chartDir);
  const r = helmrender(args);
  if (!r.ok) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
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
