{{/* Names. */}}

{{- define "tagcache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name. Kept to 52 characters so that "<fullname>-headless" stays a
valid Service name (63) and StatefulSet pod names stay valid labels.
*/}}
{{- define "tagcache.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tagcache.headlessName" -}}
{{ include "tagcache.fullname" . }}-headless
{{- end }}

{{- define "tagcache.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tagcache.labels" -}}
helm.sh/chart: {{ include "tagcache.chart" . }}
{{ include "tagcache.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tagcache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tagcache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The label that lets a pod use the client ports when networkPolicy.clients is "labelled". */}}
{{- define "tagcache.clientLabel" -}}
{{ include "tagcache.fullname" . }}-client
{{- end }}

{{- define "tagcache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tagcache.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tagcache.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The client Service's DNS name, for NOTES and the test pod. */}}
{{- define "tagcache.clientHost" -}}
{{ include "tagcache.fullname" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end }}

{{/*
--join: every pod resolves the headless Service (which lists pods before they are ready)
on every attempt until it has joined; the first pod finds nobody within 10 s and serves
alone, the others join it.
*/}}
{{- define "tagcache.join" -}}
dns+{{ include "tagcache.headlessName" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:{{ .Values.ports.gossip }}
{{- end }}

{{/* Secrets: the chart's own, unless existing ones are named for both. */}}

{{- define "tagcache.secretName" -}}
{{ include "tagcache.fullname" . }}
{{- end }}

{{- define "tagcache.createSecret" -}}
{{- if or (not .Values.auth.existingSecret) (not .Values.clusterKey.existingSecret) }}true{{ end }}
{{- end }}

{{- define "tagcache.passwordSecret" -}}
{{- .Values.auth.existingSecret | default (include "tagcache.secretName" .) }}
{{- end }}

{{- define "tagcache.passwordKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretPasswordKey }}{{ else }}password{{ end }}
{{- end }}

{{- define "tagcache.clusterKeySecret" -}}
{{- .Values.clusterKey.existingSecret | default (include "tagcache.secretName" .) }}
{{- end }}

{{- define "tagcache.clusterKeyKey" -}}
{{- if .Values.clusterKey.existingSecret }}{{ .Values.clusterKey.existingSecretKey }}{{ else }}cluster-key{{ end }}
{{- end }}

{{/*
tagcache.secretValue: the value under key in the chart's Secret: the one given in values,
else the one the Secret already holds in the cluster (so upgrades keep it), else a new
random one. Called with (list $ key given length).
*/}}
{{- define "tagcache.secretValue" -}}
{{- $ := index . 0 }}{{ $key := index . 1 }}{{ $given := index . 2 }}{{ $length := index . 3 }}
{{- if $given }}
{{- $given }}
{{- else }}
{{- $current := lookup "v1" "Secret" $.Release.Namespace (include "tagcache.secretName" $) }}
{{- if and $current $current.data (hasKey $current.data $key) }}
{{- index $current.data $key | b64dec }}
{{- else }}
{{- randAlphaNum $length }}
{{- end }}
{{- end }}
{{- end }}

{{/* Memory. */}}

{{/*
tagcache.bytes: a Kubernetes quantity (512Mi, 1Gi, 1.5Gi, 2G, 1000000) as a whole number
of bytes. Only the suffixes memory is usually given in are accepted.
*/}}
{{- define "tagcache.bytes" -}}
{{- $q := . }}
{{- if kindIs "string" $q }}
{{- $q = trim $q }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $q }}
{{- $suffix := trimPrefix $num $q }}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 }}
{{- if or (not $num) (not (hasKey $units $suffix)) }}
{{- fail (printf "memory quantity %q: want a number with an optional suffix k, M, G, T, Ki, Mi, Gi or Ti" $q) }}
{{- end }}
{{- mulf (float64 $num) (index $units $suffix) | floor | int64 }}
{{- else }}
{{- $q | float64 | floor | int64 }}
{{- end }}
{{- end }}

{{/*
tagcache.maxMemory: the --max-memory value. The node's Go runtime may use up to
max-memory × 1.25 + 64 MiB (docs/memory.md: size a container at 1.5 × max-memory +
64 MiB), so max-memory is derived from the container's memory limit as
(limit − 64 MiB) / 1.5, rounded down to a MiB; a given tagcache.maxMemory must fit the
same bound.
*/}}
{{- define "tagcache.maxMemory" -}}
{{- $limit := dig "limits" "memory" "" .Values.resources }}
{{- $given := .Values.tagcache.maxMemory | toString }}
{{- $mib := 1048576 }}
{{- if eq $given "0" }}
{{- "0" }}
{{- else if $given }}
{{- $bytes := include "tagcache.bytes" $given | int64 }}
{{- if $limit }}
{{- $limitBytes := include "tagcache.bytes" $limit | int64 }}
{{- if gt (add (div (mul $bytes 3) 2) (mul 64 $mib)) $limitBytes }}
{{- fail (printf "tagcache.maxMemory %s does not fit resources.limits.memory %s: the limit must be at least 1.5 × max-memory + 64Mi (docs/memory.md)" $given (toString $limit)) }}
{{- end }}
{{- end }}
{{- if lt $bytes $mib }}
{{- fail (printf "tagcache.maxMemory %s is below 1Mi" $given) }}
{{- end }}
{{- printf "%dMiB" (div $bytes $mib) }}
{{- else if $limit }}
{{- $limitBytes := include "tagcache.bytes" $limit | int64 }}
{{- if lt $limitBytes (mul 128 $mib) }}
{{- fail (printf "resources.limits.memory %s is below 128Mi, too small for a node" (toString $limit)) }}
{{- end }}
{{- printf "%dMiB" (div (div (mul (sub $limitBytes (mul 64 $mib)) 2) 3) $mib) }}
{{- else }}
{{- fail "set resources.limits.memory (the chart derives --max-memory from it), or tagcache.maxMemory (\"0\" for unlimited)" }}
{{- end }}
{{- end }}

{{/* Flags the chart sets itself; tagcache.extraArgs may not repeat them. */}}
{{- define "tagcache.ownFlags" -}}
bind advertise node-name join cluster-name cluster-preset cluster-key password username tcp-port http-port resp-port gossip-port peer-port max-memory shutdown-timeout log-level log-json config
{{- end }}
