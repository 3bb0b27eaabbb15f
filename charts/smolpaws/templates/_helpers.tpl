{{/* The release's full name, at most 63 characters. */}}
{{- define "smolpaws.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "smolpaws.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "smolpaws.labels" -}}
{{ include "smolpaws.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "smolpaws.serviceAccountName" -}}
{{- default (include "smolpaws.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "smolpaws.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces whose runs the operator serves, comma separated. */}}
{{- define "smolpaws.servedNamespaces" -}}
{{- concat (list .Release.Namespace) .Values.sandboxNamespaces | uniq | join "," -}}
{{- end -}}

{{- define "smolpaws.githubSecret" -}}
{{- default (printf "%s-github" (include "smolpaws.fullname" .)) .Values.github.existingSecret -}}
{{- end -}}

{{- define "smolpaws.llmSecret" -}}
{{- default (printf "%s-llm" (include "smolpaws.fullname" .)) .Values.llm.existingSecret -}}
{{- end -}}

{{- define "smolpaws.daytonaSecret" -}}
{{- default (printf "%s-daytona" (include "smolpaws.fullname" .)) .Values.daytona.existingSecret -}}
{{- end -}}

{{/* Whether the agent has an LLM key from a Secret. */}}
{{- define "smolpaws.hasLlmKey" -}}
{{- if or .Values.llm.existingSecret .Values.llm.apiKey -}}true{{- end -}}
{{- end -}}

{{/* A map as KEY=value pairs, comma separated. */}}
{{- define "smolpaws.keyValues" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key (toString $value)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
