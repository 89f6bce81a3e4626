// Command helmrender renders a Helm chart the way `helm template` does, built
// only from Debian packages (Go's text/template, Masterminds/sprig v3 and
// gopkg.in/yaml.v2), so CI can render our chart without downloading a helm
// binary.
//
// It follows Helm v3's engine (pkg/engine) where our chart can tell the
// difference:
//   - every file under templates/ is parsed into one template set named
//     "<chart>/templates/<file>"; files whose name starts with "_" are partials
//     and NOTES.txt is not a manifest;
//   - the function map is sprig's TxtFuncMap without env/expandenv, plus Helm's
//     include, tpl, required, toYaml, fromYaml, fromYamlArray, toJson,
//     fromJson, fromJsonArray, toToml (unsupported: error), lookup (returns an
//     empty map, as in `helm template`);
//   - missingkey=zero and "<no value>" replaced by "";
//   - values are read YAML -> JSON -> Go values (numbers are float64, as Helm's
//     sigs.k8s.io/yaml does), values files are coalesced over the chart's
//     values.yaml (a null deletes a key), and --set a.b=c is applied last;
//   - toYaml is JSON -> YAML with sorted keys and the trailing newline trimmed;
//   - the top-level object has .Values, .Release, .Chart (Chart.yaml with
//     capitalised keys), .Capabilities, .Template and .Files (Get only);
//   - output: "---\n# Source: <file>\n<doc>" per document, ordered by Helm's
//     install order (kind), then by file name, like `helm template`.
//
// Usage: helmrender [-f values.yaml]... [--set a.b=c]... [--name N]
//
//	[--namespace NS] [--kube-version 1.31.0] [--show-only templates/x.yaml]
//	[--show-values] [--show-notes] CHART_DIR
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig" // Debian: golang-github-masterminds-sprig-dev (v3)
	"gopkg.in/yaml.v2"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// fromYAMLToJSONValue converts YAML text to the value Helm would see: YAML is
// decoded, converted to JSON and decoded again (maps become
// map[string]interface{}, numbers float64).
func yamlToJSONValue(data []byte, out interface{}) error {
	var raw interface{}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return err
	}
	conv, err := jsonify(raw)
	if err != nil {
		return err
	}
	j, err := json.Marshal(conv)
	if err != nil {
		return err
	}
	return json.Unmarshal(j, out)
}

func jsonify(v interface{}) (interface{}, error) {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, val := range t {
			ks, ok := k.(string)
			if !ok {
				ks = fmt.Sprint(k)
			}
			c, err := jsonify(val)
			if err != nil {
				return nil, err
			}
			m[ks] = c
		}
		return m, nil
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, val := range t {
			c, err := jsonify(val)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	default:
		return v, nil
	}
}

func toYAML(v interface{}) string {
	j, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	var obj interface{}
	if err := yaml.Unmarshal(j, &obj); err != nil {
		return ""
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(out), "\n")
}

func toJSON(v interface{}) string {
	j, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(j)
}

func fromYAML(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yamlToJSONValue([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromYAMLArray(s string) []interface{} {
	var a []interface{}
	if err := yamlToJSONValue([]byte(s), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSONArray(s string) []interface{} {
	var a []interface{}
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

// coalesce merges src over dst (src wins); a nil in src deletes the key.
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	for k, sv := range src {
		if sv == nil {
			delete(dst, k)
			continue
		}
		sm, sIsMap := sv.(map[string]interface{})
		dm, dIsMap := dst[k].(map[string]interface{})
		if sIsMap && dIsMap {
			dst[k] = coalesce(dm, sm)
		} else {
			dst[k] = sv
		}
	}
	return dst
}

// parseSetValue types a --set value like Helm's strvals does for scalars.
func parseSetValue(s string) interface{} {
	switch s {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	return s
}

func applySet(vals map[string]interface{}, expr string) error {
	eq := strings.IndexByte(expr, '=')
	if eq <= 0 {
		return fmt.Errorf("--set %q: want key=value", expr)
	}
	keys := strings.Split(expr[:eq], ".")
	cur := vals
	for _, k := range keys[:len(keys)-1] {
		next, ok := cur[k].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			cur[k] = next
		}
		cur = next
	}
	v := parseSetValue(expr[eq+1:])
	if v == nil {
		delete(cur, keys[len(keys)-1])
	} else {
		cur[keys[len(keys)-1]] = v
	}
	return nil
}

// installOrder is Helm's releaseutil.InstallOrder.
var installOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
	"PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret",
	"SecretList", "ConfigMap", "StorageClass", "PersistentVolume",
	"PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
	"ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role",
	"RoleList", "RoleBinding", "RoleBindingList", "Service", "DaemonSet", "Pod",
	"ReplicationController", "ReplicaSet", "Deployment", "HorizontalPodAutoscaler",
	"StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
}

func kindRank(kind string) int {
	for i, k := range installOrder {
		if k == kind {
			return i
		}
	}
	return len(installOrder) // unknown kinds go last, like Helm
}

type manifest struct {
	source, kind, content string
}

type renderer struct {
	tmpl *template.Template
}

func (r *renderer) funcs() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	extra := template.FuncMap{
		"toYaml":        toYAML,
		"fromYaml":      fromYAML,
		"fromYamlArray": fromYAMLArray,
		"toJson":        toJSON,
		"fromJson":      fromJSON,
		"fromJsonArray": fromJSONArray,
		"toToml": func(interface{}) (string, error) {
			return "", errors.New("toToml is not supported by helmrender")
		},
		"include": func(name string, data interface{}) (string, error) {
			var buf bytes.Buffer
			if err := r.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
				return "", err
			}
			return buf.String(), nil
		},
		"tpl": func(text string, data interface{}) (string, error) {
			t, err := r.tmpl.Clone()
			if err != nil {
				return "", err
			}
			t, err = t.New("tpl").Parse(text)
			if err != nil {
				return "", err
			}
			var buf bytes.Buffer
			if err := t.Execute(&buf, data); err != nil {
				return "", err
			}
			return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
		},
		"required": func(msg string, v interface{}) (interface{}, error) {
			if v == nil {
				return nil, errors.New(msg)
			}
			if s, ok := v.(string); ok && s == "" {
				return nil, errors.New(msg)
			}
			return v, nil
		},
		"lookup": func(string, string, string, string) (map[string]interface{}, error) {
			return map[string]interface{}{}, nil
		},
	}
	for k, v := range extra {
		f[k] = v
	}
	return f
}

func capitalizeChart(meta map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range meta {
		out[strings.ToUpper(k[:1])+k[1:]] = v
	}
	return out
}

type files map[string][]byte

func (f files) Get(name string) string { return string(f[name]) }

func run() error {
	var valueFiles, sets multiFlag
	name := flag.String("name", "cocostorage", "release name")
	namespace := flag.String("namespace", "kube-system", "release namespace")
	kubeVersion := flag.String("kube-version", "1.31.0", "Kubernetes version for .Capabilities")
	showOnly := flag.String("show-only", "", "render only this template (path relative to the chart)")
	showNotes := flag.Bool("show-notes", false, "print the rendered templates/NOTES.txt (what helm prints after install) and exit")
	showValues := flag.Bool("show-values", false, "print the coalesced values as JSON (what values.schema.json is checked against) and exit")
	flag.Var(&valueFiles, "f", "values file (repeatable)")
	flag.Var(&sets, "set", "key=value (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		return errors.New("usage: helmrender [flags] CHART_DIR")
	}
	chartDir := flag.Arg(0)

	chartYAML, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	chartMeta := map[string]interface{}{}
	if err := yamlToJSONValue(chartYAML, &chartMeta); err != nil {
		return fmt.Errorf("Chart.yaml: %w", err)
	}
	chartName, _ := chartMeta["name"].(string)
	if chartName == "" {
		return errors.New("Chart.yaml: name is required")
	}
	if chartMeta["apiVersion"] != "v2" {
		return errors.New("Chart.yaml: apiVersion must be v2")
	}

	values := map[string]interface{}{}
	if data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml")); err == nil {
		if err := yamlToJSONValue(data, &values); err != nil {
			return fmt.Errorf("values.yaml: %w", err)
		}
	}
	for _, vf := range valueFiles {
		data, err := os.ReadFile(vf)
		if err != nil {
			return err
		}
		user := map[string]interface{}{}
		if err := yamlToJSONValue(data, &user); err != nil {
			return fmt.Errorf("%s: %w", vf, err)
		}
		values = coalesce(values, user)
	}
	for _, s := range sets {
		if err := applySet(values, s); err != nil {
			return err
		}
	}

	if *showValues {
		j, err := json.MarshalIndent(values, "", "  ")
		if err != nil {
			return err
		}
		fmt.Println(string(j))
		return nil
	}

	kv := strings.SplitN(strings.TrimPrefix(*kubeVersion, "v"), ".", 3)
	if len(kv) < 2 {
		return fmt.Errorf("--kube-version %q: want MAJOR.MINOR[.PATCH]", *kubeVersion)
	}

	r := &renderer{tmpl: template.New("gotpl")}
	r.tmpl.Option("missingkey=zero")
	r.tmpl.Funcs(r.funcs())

	chartFiles := files{}
	var names []string
	err = filepath.Walk(chartDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		rel = filepath.ToSlash(rel)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.HasPrefix(rel, "templates/") {
			names = append(names, rel)
			full := chartName + "/" + rel
			if _, err := r.tmpl.New(full).Parse(string(data)); err != nil {
				return err
			}
		} else {
			chartFiles[rel] = data
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)

	top := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{
			"Name": *name, "Namespace": *namespace, "IsInstall": true,
			"IsUpgrade": false, "Revision": 1, "Service": "Helm",
		},
		"Chart": capitalizeChart(chartMeta),
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{
				"Version": "v" + strings.TrimPrefix(*kubeVersion, "v"), "GitVersion": "v" + strings.TrimPrefix(*kubeVersion, "v"),
				"Major": kv[0], "Minor": kv[1],
			},
			"APIVersions": []string{"v1", "apps/v1", "storage.k8s.io/v1", "rbac.authorization.k8s.io/v1", "node.k8s.io/v1"},
		},
		"Files": chartFiles,
	}

	if *showNotes {
		full := chartName + "/templates/NOTES.txt"
		if r.tmpl.Lookup(full) == nil {
			return errors.New("chart has no templates/NOTES.txt")
		}
		top["Template"] = map[string]interface{}{"Name": full, "BasePath": chartName + "/templates"}
		var buf bytes.Buffer
		if err := r.tmpl.ExecuteTemplate(&buf, full, top); err != nil {
			return err
		}
		fmt.Print(strings.ReplaceAll(buf.String(), "<no value>", ""))
		return nil
	}

	var out []manifest
	for _, rel := range names {
		base := path.Base(rel)
		if strings.HasPrefix(base, "_") || base == "NOTES.txt" {
			continue
		}
		if *showOnly != "" && rel != *showOnly {
			continue
		}
		full := chartName + "/" + rel
		top["Template"] = map[string]interface{}{"Name": full, "BasePath": chartName + "/templates"}
		var buf bytes.Buffer
		if err := r.tmpl.ExecuteTemplate(&buf, full, top); err != nil {
			return err
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		for _, doc := range splitDocs(text) {
			var head struct {
				Kind string `yaml:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return fmt.Errorf("%s: rendered YAML does not parse: %w\n%s", full, err, doc)
			}
			out = append(out, manifest{source: full, kind: head.Kind, content: doc})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return kindRank(out[i].kind) < kindRank(out[j].kind)
	})
	for _, m := range out {
		fmt.Printf("---\n# Source: %s\n%s\n", m.source, m.content)
	}
	return nil
}

// splitDocs splits rendered text on YAML document separators and drops
// documents that are empty or only comments, as Helm does.
func splitDocs(text string) []string {
	var docs []string
	var cur []string
	flush := func() {
		doc := strings.TrimSpace(strings.Join(cur, "\n"))
		cur = nil
		if doc == "" {
			return
		}
		onlyComments := true
		for _, l := range strings.Split(doc, "\n") {
			l = strings.TrimSpace(l)
			if l != "" && !strings.HasPrefix(l, "#") {
				onlyComments = false
				break
			}
		}
		if !onlyComments {
			docs = append(docs, doc)
		}
	}
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimRight(l, " \t") == "---" {
			flush()
			continue
		}
		cur = append(cur, l)
	}
	flush()
	return docs
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
