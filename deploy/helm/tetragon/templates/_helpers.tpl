{{/* Names and labels shared by the templates. */}}

{{- define "tetragon.name" -}}
{{- default "tetragon" .Values.tetragon.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tetragon-operator.name" -}}
{{- default "tetragon-operator" .Values.tetragonOperator.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tetragon.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tetragon.name" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tetragon-operator.serviceAccount" -}}
{{- if .Values.tetragonOperator.serviceAccount.create -}}
{{- default (include "tetragon-operator.name" .) .Values.tetragonOperator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.tetragonOperator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tetragon.commonLabels" -}}
app.kubernetes.io/part-of: tetragon
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tetragon.selectorLabels" -}}
{{- if .Values.selectorLabelsOverride -}}
{{ toYaml .Values.selectorLabelsOverride }}
{{- else -}}
app.kubernetes.io/name: {{ include "tetragon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- end -}}

{{- define "tetragon.labels" -}}
{{ include "tetragon.commonLabels" . }}
app.kubernetes.io/name: {{ include "tetragon.name" . }}
{{- end -}}

{{- define "tetragon-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tetragon-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tetragon-operator.labels" -}}
{{ include "tetragon.commonLabels" . }}
app.kubernetes.io/name: {{ include "tetragon-operator.name" . }}
{{- end -}}

{{/* An image reference from {override, repository, tag}; an empty tag means the chart's appVersion. */}}
{{- define "tetragon.image" -}}
{{- if .image.override -}}
{{- .image.override -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .appVersion (toString .image.tag)) -}}
{{- end -}}
{{- end -}}

{{/* The lease namespace of the operator's leader election: the release namespace unless set. */}}
{{- define "tetragon-operator.leaseNamespace" -}}
{{- default .Release.Namespace .Values.tetragonOperator.failoverLease.namespace -}}
{{- end -}}
