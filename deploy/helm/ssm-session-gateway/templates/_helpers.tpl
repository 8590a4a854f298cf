{{/* Names and labels shared by every template. */}}

{{- define "gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gateway.fullname" -}}
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

{{- define "gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the cursor key: the user's, or the chart's own. */}}
{{- define "gateway.cursorKeySecret" -}}
{{- default (printf "%s-cursor-key" (include "gateway.fullname" .)) .Values.cursorKey.existingSecret }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the whole shutdown sequence plus a margin,
so the kubelet's SIGKILL never lands on a gateway still draining.
*/}}
{{- define "gateway.terminationGracePeriodSeconds" -}}
{{- $s := .Values.shutdown }}
{{- add $s.preStopSleepSeconds $s.delaySeconds $s.graceSeconds $s.marginSeconds }}
{{- end }}

{{/* Checks values.schema.json cannot express; included by deployment.yaml. */}}
{{- define "gateway.validate" -}}
{{- if eq (int .Values.ports.http) (int .Values.ports.admin) }}
{{- fail "ports.http and ports.admin must differ" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if regexMatch "(?m)^\\s*cursor_key\\s*=" .Values.config }}
{{- fail "config must not set cursor_key: a ConfigMap is not a Secret; use cursorKey.existingSecret" }}
{{- end }}
{{- if and .Values.safelist.requireId (not .Values.safelist.existingConfigMap) }}
{{- fail "safelist.requireId needs safelist.existingConfigMap: only a safelist's operations have ids" }}
{{- end }}
{{- end }}
