{{/*
Shared pieces of every component's objects. Namespaced objects carry the component's name (`activator`,
`autoscaler`, `router`, `controller`, `eventing`) because the components find each other by those Service
names in the release namespace (the controller's SYSTEM_NAMESPACE); cluster-wide RBAC objects are prefixed
with the release name.
*/}}

{{- define "serving.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; call with (dict "root" $ "component" "activator"). */}}
{{- define "serving.labels" -}}
{{ include "serving.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: serving
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "serving.chart" .root }}
{{- end -}}

{{/* The labels a Deployment selects its pods by and a Service its endpoints by. */}}
{{- define "serving.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Name of a cluster-scoped object (ClusterRole, ClusterRoleBinding) of a component. */}}
{{- define "serving.clusterName" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 253 -}}
{{- end -}}

{{- define "serving.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* In-cluster DNS name of one of the chart's Services; call with (list $ "activator"). */}}
{{- define "serving.serviceHost" -}}
{{- $root := index . 0 -}}
{{- printf "%s.%s.svc.%s" (index . 1) $root.Release.Namespace $root.Values.clusterDomain -}}
{{- end -}}

{{/* Every pod runs as the image's non-root user with the runtime's default seccomp profile. */}}
{{- define "serving.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "serving.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod annotations: Prometheus scrape settings, then the user's; call with (dict "port" 9090 "extra" map). */}}
{{- define "serving.podAnnotations" -}}
{{- if .port }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | int64 | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The scheduling fields and pull secrets shared by every component pod; call with (list $ values). */}}
{{- define "serving.podScheduling" -}}
{{- $root := index . 0 -}}
{{- $values := index . 1 -}}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A writable /tmp: the root filesystem is read-only. */}}
{{- define "serving.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{- define "serving.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* EVENTING_DATA_DIR: where the eventing component's volume is mounted. */}}
{{- define "serving.eventingDataDir" -}}
/var/lib/serving/eventing
{{- end -}}

{{/* POD_NAME from the downward API. */}}
{{- define "serving.podNameEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{/* Cross-field checks that values.schema.json cannot express, each naming the values it concerns. */}}
{{- define "serving.validate" -}}
{{- $a := .Values.activator -}}
{{- if gt (int64 $a.autoscaling.minReplicas) (int64 $a.autoscaling.maxReplicas) -}}
{{- fail (printf "activator.autoscaling.minReplicas (%v) must not exceed activator.autoscaling.maxReplicas (%v)" $a.autoscaling.minReplicas $a.autoscaling.maxReplicas) -}}
{{- end -}}
{{- if eq (int64 $a.port) (int64 $a.adminPort) -}}
{{- fail (printf "activator.port and activator.adminPort are both %v; they must differ" $a.port) -}}
{{- end -}}
{{- $r := .Values.router -}}
{{- if eq (int64 $r.port) (int64 $r.adminPort) -}}
{{- fail (printf "router.port and router.adminPort are both %v; they must differ" $r.port) -}}
{{- end -}}
{{- $e := .Values.eventing -}}
{{- if and $e.enabled (eq (int64 $e.port) (int64 $e.adminPort)) -}}
{{- fail (printf "eventing.port and eventing.adminPort are both %v; they must differ" $e.port) -}}
{{- end -}}
{{- if and (gt (int64 .Values.controller.replicas) 1) (not .Values.controller.leaderElect) -}}
{{- fail (printf "controller.replicas is %v but controller.leaderElect is false: replicas would reconcile against each other" .Values.controller.replicas) -}}
{{- end -}}
{{- if and (gt (int64 .Values.autoscaler.replicas) 1) (not .Values.autoscaler.leaderElect) -}}
{{- fail (printf "autoscaler.replicas is %v but autoscaler.leaderElect is false: replicas would scale against each other" .Values.autoscaler.replicas) -}}
{{- end -}}
{{- if and (eq $r.service.type "ClusterIP") (not (kindIs "invalid" $r.service.nodePort)) -}}
{{- fail "router.service.nodePort is set but router.service.type is ClusterIP" -}}
{{- end -}}
{{- end -}}

{{/* A Role and RoleBinding for a component's leader-election Lease in the release namespace; call with the
component's (dict "root" $ "component" NAME), its ServiceAccount being NAME. */}}
{{- define "serving.leaseRole" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ .component }}-leases
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "serving.labels" . | nindent 4 }}
rules:
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["get", "list", "watch", "create", "update", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ .component }}-leases
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "serving.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ .component }}-leases
subjects:
  - kind: ServiceAccount
    name: {{ .component }}
    namespace: {{ .root.Release.Namespace }}
{{- end -}}

{{/* AUTOSCALER_CONFIG: config-autoscaler keys as `key=value,...`, sorted by key (Go templates range maps in
key order, so the text, and the pod template's hash, is stable). */}}
{{- define "serving.autoscalerConfig" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- if kindIs "float64" $value -}}
{{- $value = ternary ($value | int64 | toString) (toString $value) (eq ($value | int64 | float64) $value) -}}
{{- end -}}
{{- $pairs = append $pairs (printf "%s=%v" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
