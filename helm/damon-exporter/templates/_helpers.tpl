{{/* Name of every object: the release name (install as `helm install damon-exporter ...`). */}}
{{- define "damon-exporter.fullname" -}}
{{ .Release.Name }}
{{- end -}}

{{/* Labels that select the pods; never change them on upgrade. */}}
{{- define "damon-exporter.selectorLabels" -}}
app.kubernetes.io/name: damon-exporter
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "damon-exporter.labels" -}}
{{ include "damon-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: damon-exporter-{{ .Chart.Version }}
{{- end -}}
