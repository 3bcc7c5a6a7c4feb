{{/* The chart's name, or nameOverride. */}}
{{- define "cellos-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: the release name, with the chart's name
unless the release name holds it; or fullnameOverride. Objects are named as
kustomize names them with config/default's namePrefix: <prefix>-<name in config/>.
*/}}
{{- define "cellos-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Deployment's name, and that of its PodDisruptionBudget and NetworkPolicy. */}}
{{- define "cellos-operator.managerName" -}}
{{ include "cellos-operator.fullname" . }}-controller-manager
{{- end }}

{{- define "cellos-operator.metricsServiceName" -}}
{{ include "cellos-operator.fullname" . }}-controller-manager-metrics
{{- end }}

{{- define "cellos-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "cellos-operator.labels" -}}
helm.sh/chart: {{ include "cellos-operator.chart" . }}
{{ include "cellos-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cellos
{{- end }}

{{/* Labels that select the operator's pods. */}}
{{- define "cellos-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cellos-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cellos-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cellos-operator.managerName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name the ServiceAccount to run as when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cellos-operator.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Where the NATS Secrets are mounted: one directory each. */}}
{{- define "cellos-operator.natsDir" -}}/etc/cellos/nats{{- end }}

{{/*
The NATS authentication the values choose, after checking that they choose
at most one: creds, nkey, user, token or none.
*/}}
{{- define "cellos-operator.natsAuth" -}}
{{- $n := .Values.nats }}
{{- $modes := list }}
{{- if $n.credentials.secret.name }}{{ $modes = append $modes "creds" }}{{ end }}
{{- if $n.nkey.secret.name }}{{ $modes = append $modes "nkey" }}{{ end }}
{{- if $n.user.name }}{{ $modes = append $modes "user" }}{{ end }}
{{- if $n.token.secret.name }}{{ $modes = append $modes "token" }}{{ end }}
{{- if gt (len $modes) 1 }}
{{- fail (printf "nats: %s are set, but only one way to authenticate may be: choose one of (nats.credentials, nats.nkey, nats.user or nats.token)" (join " and " $modes)) }}
{{- end }}
{{- if and $n.user.name (not $n.user.password.secret.name) }}
{{- fail "nats.user.name needs nats.user.password.secret.name: the Secret with its password" }}
{{- end }}
{{- if and $n.user.password.secret.name (not $n.user.name) }}
{{- fail "nats.user.password.secret.name is set without nats.user.name" }}
{{- end }}
{{- if regexMatch "^[a-z]+://[^/@]*@" $n.url }}
{{- fail "nats.url carries credentials; put them in a Secret and use nats.user, nats.token, nats.nkey or nats.credentials" }}
{{- end }}
{{- if $modes }}{{ first $modes }}{{ else }}none{{ end }}
{{- end }}

{{/* Whether any TLS file is mounted. */}}
{{- define "cellos-operator.natsTLSChecked" -}}
{{- $t := .Values.nats.tls }}
{{- if $t.enabled }}
{{- if and (not $t.ca.secret.name) (not $t.clientCert.secret.name) (not $t.tlsFirst) (not (hasPrefix "tls://" .Values.nats.url)) }}
{{- fail "nats.tls.enabled: set nats.tls.ca, nats.tls.clientCert or nats.tls.tlsFirst, or use a tls:// URL" }}
{{- end }}
{{- else if or $t.ca.secret.name $t.clientCert.secret.name $t.tlsFirst }}
{{- fail "nats.tls: a CA, client certificate or tlsFirst is set, but nats.tls.enabled is false" }}
{{- end }}
{{- end }}
