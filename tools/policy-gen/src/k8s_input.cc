#include "k8s_input.h"

#include <yaml-cpp/yaml.h>

#include <exception>

#include "cocostorage/common/strings.h"

namespace cocostorage::policygen {
namespace {

// Reads typed fields from one document; every error names the field path.
class Reader {
 public:
  explicit Reader(std::string origin) : origin_(std::move(origin)) {}
  const std::string& origin() const { return origin_; }

  Status Error(std::string_view path, std::string_view what) const {
    return absl::InvalidArgumentError(Cat(origin_, ": ", path, ": ", what));
  }

  // Absent or null: false and `out` unchanged.
  StatusOr<bool> Scalar(const YAML::Node& n, const char* key, std::string_view path, std::string* out) const {
    const YAML::Node v = n[key];
    if (!v || v.IsNull()) return false;
    if (!v.IsScalar()) return Error(Cat(path, ".", key), "expected a string");
    *out = v.as<std::string>();
    return true;
  }
  StatusOr<bool> Bool(const YAML::Node& n, const char* key, std::string_view path, bool* out) const {
    std::string s;
    COCO_ASSIGN_OR_RETURN(bool present, Scalar(n, key, path, &s));
    if (!present) return false;
    if (s == "true" || s == "True") {
      *out = true;
    } else if (s == "false" || s == "False") {
      *out = false;
    } else {
      return Error(Cat(path, ".", key), Cat("expected true or false, got \"", s, "\""));
    }
    return true;
  }
  StatusOr<bool> Int(const YAML::Node& n, const char* key, std::string_view path, int64_t* out) const {
    std::string s;
    COCO_ASSIGN_OR_RETURN(bool present, Scalar(n, key, path, &s));
    if (!present) return false;
    unsigned long long v = 0;
    if (!ParseUint64(s, &v) || v > static_cast<unsigned long long>(INT64_MAX)) {
      return Error(Cat(path, ".", key), Cat("expected a non-negative integer, got \"", s, "\""));
    }
    *out = static_cast<int64_t>(v);
    return true;
  }
  // A map or absent; anything else is an error.
  StatusOr<YAML::Node> Map(const YAML::Node& n, const char* key, std::string_view path) const {
    const YAML::Node v = n[key];
    if (!v || v.IsNull()) return YAML::Node(YAML::NodeType::Undefined);
    if (!v.IsMap()) return Error(Cat(path, ".", key), "expected a mapping");
    return v;
  }
  StatusOr<YAML::Node> Seq(const YAML::Node& n, const char* key, std::string_view path) const {
    const YAML::Node v = n[key];
    if (!v || v.IsNull()) return YAML::Node(YAML::NodeType::Undefined);
    if (!v.IsSequence()) return Error(Cat(path, ".", key), "expected a list");
    return v;
  }
  StatusOr<std::vector<std::string>> StringList(const YAML::Node& n, const char* key, std::string_view path) const {
    COCO_ASSIGN_OR_RETURN(YAML::Node seq, Seq(n, key, path));
    std::vector<std::string> out;
    if (!seq) return out;
    for (size_t i = 0; i < seq.size(); ++i) {
      if (!seq[i].IsScalar()) return Error(Cat(path, ".", key, "[", i, "]"), "expected a string");
      out.push_back(seq[i].as<std::string>());
    }
    return out;
  }
  StatusOr<std::map<std::string, std::string>> StringMap(const YAML::Node& n, const char* key,
                                                         std::string_view path) const {
    COCO_ASSIGN_OR_RETURN(YAML::Node m, Map(n, key, path));
    std::map<std::string, std::string> out;
    if (!m) return out;
    for (const auto& kv : m) {
      const std::string k = kv.first.as<std::string>();
      if (!kv.second.IsScalar()) return Error(Cat(path, ".", key, ".", k), "expected a string");
      if (!out.emplace(k, kv.second.as<std::string>()).second) {
        return Error(Cat(path, ".", key), Cat("duplicate key \"", k, "\""));
      }
    }
    return out;
  }

 private:
  std::string origin_;
};

Status ParseClaimSpec(const Reader& r, const YAML::Node& obj, std::string_view path, ClaimSpec* c) {
  c->origin = r.origin();
  COCO_ASSIGN_OR_RETURN(YAML::Node meta, r.Map(obj, "metadata", path));
  if (meta) {
    COCO_RETURN_IF_ERROR(r.Scalar(meta, "name", Cat(path, ".metadata"), &c->name).status());
    COCO_RETURN_IF_ERROR(r.Scalar(meta, "namespace", Cat(path, ".metadata"), &c->namespace_).status());
  }
  COCO_ASSIGN_OR_RETURN(YAML::Node spec, r.Map(obj, "spec", path));
  if (!spec) return r.Error(path, "has no spec");
  const std::string sp = Cat(path, ".spec");
  std::string sc;
  COCO_ASSIGN_OR_RETURN(bool has_sc, r.Scalar(spec, "storageClassName", sp, &sc));
  if (has_sc) c->storage_class = sc;
  COCO_RETURN_IF_ERROR(r.Scalar(spec, "volumeMode", sp, &c->volume_mode).status());
  COCO_ASSIGN_OR_RETURN(c->access_modes, r.StringList(spec, "accessModes", sp));
  COCO_ASSIGN_OR_RETURN(YAML::Node res, r.Map(spec, "resources", sp));
  if (res) {
    COCO_ASSIGN_OR_RETURN(YAML::Node req, r.Map(res, "requests", Cat(sp, ".resources")));
    if (req) COCO_RETURN_IF_ERROR(r.Scalar(req, "storage", Cat(sp, ".resources.requests"), &c->request).status());
    COCO_ASSIGN_OR_RETURN(YAML::Node lim, r.Map(res, "limits", Cat(sp, ".resources")));
    if (lim) COCO_RETURN_IF_ERROR(r.Scalar(lim, "storage", Cat(sp, ".resources.limits"), &c->limit).status());
  }
  return OkStatus();
}

Status ParseVolume(const Reader& r, const YAML::Node& v, std::string_view path, PodVolume* out) {
  if (!v.IsMap()) return r.Error(path, "expected a mapping");
  COCO_ASSIGN_OR_RETURN(bool has_name, r.Scalar(v, "name", path, &out->name));
  if (!has_name || out->name.empty()) return r.Error(path, "volume has no name");
  for (const auto& kv : v) {
    const std::string key = kv.first.as<std::string>();
    if (key == "name") continue;
    if (key == "persistentVolumeClaim") {
      out->type = PodVolume::Type::kPvc;
      COCO_ASSIGN_OR_RETURN(YAML::Node pvc, r.Map(v, "persistentVolumeClaim", path));
      const std::string p = Cat(path, ".persistentVolumeClaim");
      if (!pvc) return r.Error(p, "is empty");
      COCO_RETURN_IF_ERROR(r.Scalar(pvc, "claimName", p, &out->claim_name).status());
      if (out->claim_name.empty()) return r.Error(p, "has no claimName");
      COCO_RETURN_IF_ERROR(r.Bool(pvc, "readOnly", p, &out->read_only).status());
    } else if (key == "csi") {
      out->type = PodVolume::Type::kCsiInline;
      COCO_ASSIGN_OR_RETURN(YAML::Node csi, r.Map(v, "csi", path));
      const std::string p = Cat(path, ".csi");
      if (!csi) return r.Error(p, "is empty");
      COCO_RETURN_IF_ERROR(r.Scalar(csi, "driver", p, &out->csi_driver).status());
      COCO_RETURN_IF_ERROR(r.Scalar(csi, "fsType", p, &out->csi_fs_type).status());
      COCO_RETURN_IF_ERROR(r.Bool(csi, "readOnly", p, &out->read_only).status());
      COCO_ASSIGN_OR_RETURN(out->csi_attributes, r.StringMap(csi, "volumeAttributes", p));
      if (csi["nodePublishSecretRef"]) out->csi_attributes["(nodePublishSecretRef)"] = "set";
    } else if (key == "ephemeral") {
      out->type = PodVolume::Type::kGenericEphemeral;
      COCO_ASSIGN_OR_RETURN(YAML::Node eph, r.Map(v, "ephemeral", path));
      const std::string p = Cat(path, ".ephemeral");
      if (!eph) return r.Error(p, "is empty");
      COCO_ASSIGN_OR_RETURN(YAML::Node tmpl, r.Map(eph, "volumeClaimTemplate", p));
      if (!tmpl) return r.Error(p, "has no volumeClaimTemplate");
      COCO_RETURN_IF_ERROR(ParseClaimSpec(r, tmpl, Cat(p, ".volumeClaimTemplate"), &out->ephemeral_claim));
    } else {
      out->type = PodVolume::Type::kOther;
      out->other_type = key;
    }
  }
  return OkStatus();
}

Status ParseContainers(const Reader& r, const YAML::Node& spec, const char* key, std::string_view path, Workload* w) {
  COCO_ASSIGN_OR_RETURN(YAML::Node list, r.Seq(spec, key, path));
  if (!list) return OkStatus();
  for (size_t i = 0; i < list.size(); ++i) {
    const YAML::Node c = list[i];
    const std::string cp = Cat(path, ".", key, "[", i, "]");
    if (!c.IsMap()) return r.Error(cp, "expected a mapping");
    std::string cname;
    COCO_RETURN_IF_ERROR(r.Scalar(c, "name", cp, &cname).status());
    for (const char* which : {"volumeMounts", "volumeDevices"}) {
      COCO_ASSIGN_OR_RETURN(YAML::Node mounts, r.Seq(c, which, cp));
      if (!mounts) continue;
      const bool device = std::string_view(which) == "volumeDevices";
      for (size_t j = 0; j < mounts.size(); ++j) {
        const YAML::Node m = mounts[j];
        const std::string mp = Cat(cp, ".", which, "[", j, "]");
        if (!m.IsMap()) return r.Error(mp, "expected a mapping");
        VolumeUse u;
        u.container = cname;
        u.device = device;
        COCO_RETURN_IF_ERROR(r.Scalar(m, "name", mp, &u.volume).status());
        COCO_RETURN_IF_ERROR(r.Scalar(m, device ? "devicePath" : "mountPath", mp, &u.path).status());
        if (u.volume.empty() || u.path.empty()) return r.Error(mp, "needs a name and a path");
        COCO_RETURN_IF_ERROR(r.Bool(m, "readOnly", mp, &u.read_only).status());
        std::string sub;
        COCO_ASSIGN_OR_RETURN(bool has_sub, r.Scalar(m, "subPath", mp, &sub));
        std::string sub_expr;
        COCO_ASSIGN_OR_RETURN(bool has_sub_expr, r.Scalar(m, "subPathExpr", mp, &sub_expr));
        u.sub_path = (has_sub && !sub.empty()) || (has_sub_expr && !sub_expr.empty());
        w->uses.push_back(std::move(u));
      }
    }
  }
  return OkStatus();
}

Status ParsePodSpec(const Reader& r, const YAML::Node& spec, std::string_view path, Workload* w) {
  if (!spec || !spec.IsMap()) return r.Error(path, "missing or not a mapping");
  COCO_ASSIGN_OR_RETURN(YAML::Node sc, r.Map(spec, "securityContext", path));
  if (sc) {
    int64_t g = 0;
    COCO_ASSIGN_OR_RETURN(bool has, r.Int(sc, "fsGroup", Cat(path, ".securityContext"), &g));
    if (has) w->fs_group = g;
  }
  COCO_ASSIGN_OR_RETURN(YAML::Node vols, r.Seq(spec, "volumes", path));
  if (vols) {
    for (size_t i = 0; i < vols.size(); ++i) {
      PodVolume v;
      COCO_RETURN_IF_ERROR(ParseVolume(r, vols[i], Cat(path, ".volumes[", i, "]"), &v));
      w->volumes.push_back(std::move(v));
    }
  }
  COCO_RETURN_IF_ERROR(ParseContainers(r, spec, "initContainers", path, w));
  COCO_RETURN_IF_ERROR(ParseContainers(r, spec, "containers", path, w));
  return OkStatus();
}

Status ParseObject(const Reader& r, const YAML::Node& doc, K8sInputs* out) {
  if (!doc || doc.IsNull()) return OkStatus();  // an empty document ("---" at the end)
  if (!doc.IsMap()) return r.Error("(document)", "expected a Kubernetes object (a mapping)");
  std::string kind;
  COCO_RETURN_IF_ERROR(r.Scalar(doc, "kind", "", &kind).status());
  if (kind == "List") {
    COCO_ASSIGN_OR_RETURN(YAML::Node items, r.Seq(doc, "items", ""));
    if (!items) return OkStatus();
    for (size_t i = 0; i < items.size(); ++i) {
      COCO_RETURN_IF_ERROR(ParseObject(Reader(Cat(r.origin(), ", item ", i)), items[i], out));
    }
    return OkStatus();
  }
  std::string name, ns;
  COCO_ASSIGN_OR_RETURN(YAML::Node meta, r.Map(doc, "metadata", ""));
  std::map<std::string, std::string> annotations;
  if (meta) {
    COCO_RETURN_IF_ERROR(r.Scalar(meta, "name", "metadata", &name).status());
    COCO_RETURN_IF_ERROR(r.Scalar(meta, "namespace", "metadata", &ns).status());
    COCO_ASSIGN_OR_RETURN(annotations, r.StringMap(meta, "annotations", "metadata"));
  }
  if (kind == "PersistentVolumeClaim") {
    ClaimSpec c;
    COCO_RETURN_IF_ERROR(ParseClaimSpec(r, doc, kind, &c));
    if (c.name.empty()) return r.Error("metadata.name", "a PersistentVolumeClaim needs a name");
    out->claims.push_back(std::move(c));
    return OkStatus();
  }
  if (kind == "StorageClass") {
    StorageClassSpec s;
    s.origin = r.origin();
    s.name = name;
    if (s.name.empty()) return r.Error("metadata.name", "a StorageClass needs a name");
    COCO_RETURN_IF_ERROR(r.Scalar(doc, "provisioner", "", &s.provisioner).status());
    COCO_ASSIGN_OR_RETURN(s.parameters, r.StringMap(doc, "parameters", ""));
    COCO_ASSIGN_OR_RETURN(s.mount_options, r.StringList(doc, "mountOptions", ""));
    COCO_RETURN_IF_ERROR(r.Bool(doc, "allowVolumeExpansion", "", &s.allow_volume_expansion).status());
    auto it = annotations.find("storageclass.kubernetes.io/is-default-class");
    s.is_default = it != annotations.end() && it->second == "true";
    out->classes.push_back(std::move(s));
    return OkStatus();
  }
  static const char* kControllers[] = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"};
  bool controller = false;
  for (const char* k : kControllers) controller = controller || kind == k;
  if (kind != "Pod" && !controller) return OkStatus();  // Service, ConfigMap, ...: not ours to read

  Workload w;
  w.kind = kind;
  w.name = name;
  w.namespace_ = ns;
  w.origin = r.origin();
  if (w.name.empty()) return r.Error("metadata.name", Cat("a ", kind, " needs a name"));
  COCO_ASSIGN_OR_RETURN(YAML::Node spec, r.Map(doc, "spec", ""));
  if (!spec) return r.Error("spec", "missing");
  if (kind == "Pod") {
    COCO_RETURN_IF_ERROR(ParsePodSpec(r, spec, "spec", &w));
  } else {
    int64_t replicas = 0;
    COCO_ASSIGN_OR_RETURN(bool has_replicas, r.Int(spec, "replicas", "spec", &replicas));
    if (has_replicas) w.replicas = replicas;
    COCO_ASSIGN_OR_RETURN(YAML::Node tmpl, r.Map(spec, "template", "spec"));
    if (!tmpl) return r.Error("spec.template", "missing");
    COCO_ASSIGN_OR_RETURN(YAML::Node pod_spec, r.Map(tmpl, "spec", "spec.template"));
    COCO_RETURN_IF_ERROR(ParsePodSpec(r, pod_spec, "spec.template.spec", &w));
    if (kind == "StatefulSet") {
      COCO_ASSIGN_OR_RETURN(YAML::Node vcts, r.Seq(spec, "volumeClaimTemplates", "spec"));
      if (vcts) {
        for (size_t i = 0; i < vcts.size(); ++i) {
          ClaimSpec c;
          const std::string p = Cat("spec.volumeClaimTemplates[", i, "]");
          if (!vcts[i].IsMap()) return r.Error(p, "expected a mapping");
          COCO_RETURN_IF_ERROR(ParseClaimSpec(r, vcts[i], p, &c));
          if (c.name.empty()) return r.Error(p, "a claim template needs metadata.name");
          w.claim_templates.push_back(std::move(c));
        }
      }
    }
  }
  out->workloads.push_back(std::move(w));
  return OkStatus();
}

}  // namespace

Status ParseK8sYaml(std::string_view yaml_text, std::string_view source_name, K8sInputs* out) {
  // yaml-cpp reports errors by throwing; nothing may leave this function.
  try {
    const std::vector<YAML::Node> docs = YAML::LoadAll(std::string(yaml_text));
    for (size_t i = 0; i < docs.size(); ++i) {
      COCO_RETURN_IF_ERROR(ParseObject(Reader(Cat(source_name, ", document ", i + 1)), docs[i], out));
    }
    return OkStatus();
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(Cat(source_name, ": not valid YAML: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(Cat(source_name, ": cannot read: ", e.what()));
  }
}

}  // namespace cocostorage::policygen
