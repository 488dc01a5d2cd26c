{{- define "secprov.labels" -}}
app.kubernetes.io/name: secprov-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "secprov.selector" -}}
app.kubernetes.io/name: secprov-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
