{{- define "secprov.labels" -}}
app.kubernetes.io/name: secprov-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "secprov.selector" -}}
app.kubernetes.io/name: secprov-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- /* The release's name for objects that two releases must not share: every cluster-scoped
object (ClusterRoles, ClusterRoleBindings), and the credential RoleBindings that several
releases may place in one team namespace. `<release>-secprov-operator`, or the release name
alone when it already says secprov-operator (Helm's usual fullname). */ -}}
{{- define "secprov.fullname" -}}
{{- if contains "secprov-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-secprov-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- /* The ClusterRole that namespaces bind to let the operator read their credential Secrets;
the operator names it in SecretAccessDenied (SECPROV_CREDENTIAL_READER_ROLE). */ -}}
{{- define "secprov.credentialReader" -}}
{{- include "secprov.fullname" . }}-credential-reader
{{- end -}}
