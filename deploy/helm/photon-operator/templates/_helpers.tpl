{{/* The name every object of the release carries. */}}
{{- define "photon-operator.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "photon-operator.labels" -}}
app.kubernetes.io/name: photon-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- if .Values.chartLabels }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
{{- end -}}

{{- define "photon-operator.selector" -}}
app.kubernetes.io/name: photon-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "photon-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "photon-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "photon-operator.name" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
