{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "cocostorage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name used as the prefix of every object we create. */}}
{{- define "cocostorage.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cocostorage.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cocostorage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cocostorage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cocostorage.labels" -}}
helm.sh/chart: {{ include "cocostorage.chart" . }}
{{ include "cocostorage.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cocostorage
{{- end -}}

{{- define "cocostorage.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-node" (include "cocostorage.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag or repository@digest. Call with (dict "image" X "default" TAG). */}}
{{- define "cocostorage.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .default .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Kubelet's view of our socket directory on the host. */}}
{{- define "cocostorage.socketDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.kubeletDir) .Values.driverName -}}
{{- end -}}

{{/* StorageClass parameters; call with (dict "sc" X "kbs" BOOL "extraCreateMetadata" BOOL). */}}
{{- define "cocostorage.scParameters" -}}
{{- if .kbs }}
{{- $uri := required (printf "storageClasses.%s.kbsResourceUri is required when storageClasses.%s.create is true" .kind .kind) .sc.kbsResourceUri }}
{{- if and (contains "$" $uri) (not .extraCreateMetadata) }}
{{- fail (printf "storageClasses.%s.kbsResourceUri %q is a template: it needs node.provisioner.extraCreateMetadata=true (the provisioner's --extra-create-metadata passes the PVC/PV names it is resolved from)" .kind $uri) }}
{{- end }}
keySource: kbs
kbsResourceUri: {{ $uri | quote }}
{{- else }}
keySource: ephemeral
{{- end }}
fsType: {{ .sc.fsType | quote }}
integrity: {{ .sc.integrity | quote }}
{{- with .sc.mkfsOptions }}
mkfsOptions: {{ . | quote }}
{{- end }}
{{- if eq .kind "rbd" }}
{{- /* The monitors are the plugin's (--rbd-monitors); the class names the pool. */}}
pool: {{ required "storageClasses.rbd.pool is required" .sc.pool | quote }}
csi.storage.k8s.io/provisioner-secret-name: {{ .sc.provisionerSecret.name | quote }}
csi.storage.k8s.io/provisioner-secret-namespace: {{ .sc.provisionerSecret.namespace | quote }}
csi.storage.k8s.io/controller-expand-secret-name: {{ .sc.provisionerSecret.name | quote }}
csi.storage.k8s.io/controller-expand-secret-namespace: {{ .sc.provisionerSecret.namespace | quote }}
csi.storage.k8s.io/node-stage-secret-name: {{ .sc.nodeStageSecret.name | quote }}
csi.storage.k8s.io/node-stage-secret-namespace: {{ .sc.nodeStageSecret.namespace | quote }}
{{- end }}
{{- end -}}

{{- /*
  Every container runs as uid 0 because the host directories it writes are
  root-owned (kubelet's plugin and pod dirs, Kata's 0700 direct-volume dir),
  but with every capability dropped: an owner needs no CAP_DAC_OVERRIDE, and
  nothing here mounts, chowns or opens devices. No container is privileged,
  none can gain privileges, all root filesystems are read-only.
*/}}
{{/* The plugin's: the same, plus CAP_LINUX_IMMUTABLE alone, with which it
     seals each file-system publish target (chattr +i) so that a pod outside
     a Kata VM cannot write plaintext through it (docs/csi.md). */}}
{{- define "cocostorage.pluginSecurityContext" -}}
runAsUser: 0
runAsGroup: 0
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
  add: [LINUX_IMMUTABLE]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* With backend rbd the plugin maps images (`rbd device map`: writes
     /sys/bus/rbd, creates /dev/rbdN, may load the module), which needs a
     privileged container, as ceph-csi's node plugin is. */}}
{{- define "cocostorage.rbdPluginSecurityContext" -}}
runAsUser: 0
runAsGroup: 0
privileged: true
allowPrivilegeEscalation: true
readOnlyRootFilesystem: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "cocostorage.containerSecurityContext" -}}
runAsUser: 0
runAsGroup: 0
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A list of names as a CEL list literal: ['a', 'b']. Names are DNS
     subdomains (values.schema.json), so single quotes need no escaping. */}}
{{- define "cocostorage.celList" -}}
[{{ range $i, $n := . }}{{ if $i }}, {{ end }}{{ squote $n }}{{ end }}]
{{- end -}}

{{/* StorageClass names the admission policy treats as ours: every class of
     the chart (created here or not) plus admissionPolicy.extraStorageClassNames. */}}
{{- define "cocostorage.policyStorageClasses" -}}
{{- $names := list -}}
{{- range $k, $sc := .Values.storageClasses }}{{ $names = append $names $sc.name }}{{ end -}}
{{- $names = concat $names .Values.admissionPolicy.extraStorageClassNames | uniq -}}
{{- include "cocostorage.celList" $names -}}
{{- end -}}
