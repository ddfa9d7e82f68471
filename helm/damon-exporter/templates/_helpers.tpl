{{/* Chart name, or nameOverride. */}}
{{- define "damon-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of every object: fullnameOverride, else the release name, with the chart name
appended unless the release name already contains it (Helm's usual scheme). */}}
{{- define "damon-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "damon-exporter.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{/* Labels that select the pods; never change them on upgrade. */}}
{{- define "damon-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "damon-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "damon-exporter.labels" -}}
{{ include "damon-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "damon-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "damon-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* registry/repository:tag or registry/repository@digest; global.imageRegistry wins. */}}
{{- define "damon-exporter.image" -}}
{{- $registry := default .Values.image.registry .Values.global.imageRegistry }}
{{- $repo := ternary (printf "%s/%s" $registry .Values.image.repository) .Values.image.repository (ne $registry "") }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding web-config.yml, or "" when there is no web config. */}}
{{- define "damon-exporter.webConfigSecret" -}}
{{- if .Values.webConfig.existingSecret }}
{{- .Values.webConfig.existingSecret }}
{{- else if .Values.webConfig.config }}
{{- printf "%s-web-config" (include "damon-exporter.fullname" .) }}
{{- end }}
{{- end }}

{{/* "true" when the exporter may ask for credentials: basic_auth_users in webConfig.config, or
an existing Secret whose content the chart cannot see. */}}
{{- define "damon-exporter.authMayBeOn" -}}
{{- if or .Values.webConfig.existingSecret (and .Values.webConfig.config .Values.webConfig.config.basic_auth_users) }}true{{ end }}
{{- end }}

{{/* A probe of `path`: httpGet (HTTPS when webConfig.config has TLS), or tcpSocket when basic
auth may be on and the values give no httpHeaders (no credentials to send).
Arguments: (list $ probeValues path). */}}
{{- define "damon-exporter.probe" -}}
{{- $root := index . 0 }}
{{- $probe := index . 1 }}
{{- $path := index . 2 }}
{{- $http := $probe.httpGet | default dict }}
{{- if and (include "damon-exporter.authMayBeOn" $root) (not $http.httpHeaders) }}
tcpSocket:
  port: metrics
{{- else }}
{{- $tls := and $root.Values.webConfig.config $root.Values.webConfig.config.tls_server_config }}
httpGet:
  path: {{ $path }}
  port: metrics
  scheme: {{ ternary "HTTPS" (upper (default "http" $http.scheme)) (not (empty $tls)) }}
  {{- with $http.httpHeaders }}
  httpHeaders:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- with (omit $probe "httpGet") }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The exporter container's securityContext before containerSecurityContext is merged over it. */}}
{{- define "damon-exporter.containerSecurityContext" -}}
runAsUser: 0
runAsNonRoot: false
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
  {{- if .Values.pageIdle.enabled }}
  add: [SYS_ADMIN, SYS_PTRACE, DAC_OVERRIDE]
  {{- else }}
  add: [SYS_PTRACE, DAC_OVERRIDE]
  {{- end }}
{{- end }}

{{/* Endpoint fields shared by the ServiceMonitor and the PodMonitor. Argument: the monitor values. */}}
{{- define "damon-exporter.endpointFields" -}}
{{- with .interval }}
interval: {{ . }}
{{- end }}
{{- with .scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
{{- with .scheme }}
scheme: {{ lower . }}
{{- end }}
{{- with .basicAuth }}
basicAuth:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tlsConfig }}
tlsConfig:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .proxyUrl }}
proxyUrl: {{ . }}
{{- end }}
relabelings:
  - sourceLabels: [__meta_kubernetes_pod_node_name]
    targetLabel: node
    action: replace
  {{- with .relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Spec fields shared by the ServiceMonitor and the PodMonitor (limits, jobLabel, selector).
Arguments: (list $ monitorValues). */}}
{{- define "damon-exporter.monitorSpecFields" -}}
{{- $root := index . 0 }}
{{- $m := index . 1 }}
{{- with $m.jobLabel }}
jobLabel: {{ . }}
{{- end }}
{{- with $m.podTargetLabels }}
podTargetLabels:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- range $key := list "sampleLimit" "targetLimit" "labelLimit" "labelNameLengthLimit" "labelValueLengthLimit" }}
{{- with (index $m $key) }}
{{ $key }}: {{ . }}
{{- end }}
{{- end }}
{{- if $m.attachMetadata.node }}
attachMetadata:
  node: true
{{- end }}
selector:
  matchLabels:
    {{- if $m.selectorOverride }}
    {{- toYaml $m.selectorOverride | nindent 4 }}
    {{- else }}
    {{- include "damon-exporter.selectorLabels" $root | nindent 4 }}
    {{- end }}
{{- if $m.namespace }}
namespaceSelector:
  matchNames: [{{ include "damon-exporter.namespace" $root }}]
{{- end }}
{{- end }}
