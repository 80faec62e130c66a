{{- define "analytics.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "analytics.labels" -}}
app.kubernetes.io/name: analytics-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "analytics.selector" -}}
app.kubernetes.io/name: analytics-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "analytics.monitoring" -}}
{{- .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}
{{- end -}}

{{/* Where pipelines go: the one namespace the operator watches, or the release's when it watches all. */}}
{{- define "analytics.pipelineNamespace" -}}
{{- .Values.operator.watchNamespace | default .Release.Namespace -}}
{{- end -}}
