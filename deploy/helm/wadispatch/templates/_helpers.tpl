{{/* Names. */}}
{{- define "wadispatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wadispatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wadispatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wadispatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wadispatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "wadispatch.labels" -}}
helm.sh/chart: {{ include "wadispatch.chart" . }}
{{ include "wadispatch.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "wadispatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wadispatch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "wadispatch.amqpSecret" -}}
{{- .Values.amqp.existingSecret | default (printf "%s-amqp" (include "wadispatch.fullname" .)) -}}
{{- end -}}

{{- define "wadispatch.adminSecret" -}}
{{- .Values.admin.existingSecret | default (printf "%s-admin" (include "wadispatch.fullname" .)) -}}
{{- end -}}

{{- define "wadispatch.tokensSecret" -}}
{{- .Values.tokens.existingSecret | default (printf "%s-tokens" (include "wadispatch.fullname" .)) -}}
{{- end -}}

{{- define "wadispatch.tenantsConfigMap" -}}
{{- .Values.tenants.existingConfigMap | default (printf "%s-tenants" (include "wadispatch.fullname" .)) -}}
{{- end -}}

{{/*
wadispatch.durationMillis: a Go duration made of whole h, m, s and ms
(in that order, e.g. 25s, 1m30s, 1500ms) as milliseconds; anything else
fails rendering (values.schema.json refuses it first).
*/}}
{{- define "wadispatch.durationMillis" -}}
{{- $d := toString . -}}
{{- if not (regexMatch "^([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$" $d) -}}
{{- fail (printf "config.shutdownTimeout %q: use a Go duration of whole h, m, s and ms, e.g. 25s or 1m30s" $d) -}}
{{- end -}}
{{- $ms := 0 -}}
{{- range regexFindAll "[0-9]+(ms|h|m|s)" $d -1 -}}
{{- $n := regexFind "^[0-9]+" . | atoi -}}
{{- $unit := regexReplaceAll "^[0-9]+" . "" -}}
{{- if eq $unit "h" -}}{{- $ms = add $ms (mul $n 3600000) -}}
{{- else if eq $unit "m" -}}{{- $ms = add $ms (mul $n 60000) -}}
{{- else if eq $unit "s" -}}{{- $ms = add $ms (mul $n 1000) -}}
{{- else -}}{{- $ms = add $ms $n -}}
{{- end -}}
{{- end -}}
{{- if le (int64 $ms) 0 -}}
{{- fail (printf "config.shutdownTimeout %q: must be more than 0" $d) -}}
{{- end -}}
{{- $ms -}}
{{- end -}}

{{/*
wadispatch.terminationGracePeriodSeconds: SHUTDOWN_TIMEOUT rounded up to
whole seconds, plus 5 s for the broker connections and the admin API to
close; a value set by hand below that fails rendering, since the kubelet
would kill the worker with jobs still in hand.
*/}}
{{- define "wadispatch.terminationGracePeriodSeconds" -}}
{{- $ms := include "wadispatch.durationMillis" .Values.config.shutdownTimeout | int64 -}}
{{- $min := add (div (add $ms 999) 1000) 5 -}}
{{- $set := .Values.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $set -}}
{{- $min -}}
{{- else if lt (int64 $set) (int64 $min) -}}
{{- fail (printf "terminationGracePeriodSeconds %v is too low: it must be at least SHUTDOWN_TIMEOUT (config.shutdownTimeout %s) + 5 s = %v, or the kubelet kills the worker before it has finished the jobs in hand; leave it empty to have it computed" $set (toString .Values.config.shutdownTimeout) $min) -}}
{{- else -}}
{{- int64 $set -}}
{{- end -}}
{{- end -}}

{{/*
wadispatch.env: the worker's environment. A variable of extraEnv with the
name of one set here replaces it (rather than appearing twice).
*/}}
{{- define "wadispatch.env" -}}
{{- $c := .Values.config -}}
{{- $env := list -}}
{{- $env = append $env (dict "name" "AMQP_URL" "valueFrom" (dict "secretKeyRef" (dict "name" (include "wadispatch.amqpSecret" .) "key" .Values.amqp.secretKey))) -}}
{{- $env = append $env (dict "name" "AMQP_QUEUE" "value" (toString $c.amqpQueue)) -}}
{{- $env = append $env (dict "name" "RESULTS_EXCHANGE" "value" (toString $c.resultsExchange)) -}}
{{- $env = append $env (dict "name" "TENANTS_FILE" "value" (printf "%s/%s" (trimSuffix "/" .Values.tenants.mountPath) .Values.tenants.key)) -}}
{{- $env = append $env (dict "name" "TENANTS_WATCH" "value" (toString $c.tenantsWatch)) -}}
{{- $env = append $env (dict "name" "META_BASE_URL" "value" (toString $c.metaBaseUrl)) -}}
{{- $env = append $env (dict "name" "META_API_VERSION" "value" (toString $c.metaApiVersion)) -}}
{{- $env = append $env (dict "name" "META_TIMEOUT" "value" (toString $c.metaTimeout)) -}}
{{- $env = append $env (dict "name" "LOG_LEVEL" "value" (toString $c.logLevel)) -}}
{{- $env = append $env (dict "name" "PREFETCH" "value" ($c.prefetch | int | toString)) -}}
{{- $env = append $env (dict "name" "SHARDS" "value" ($c.shards | int | toString)) -}}
{{- $env = append $env (dict "name" "SHUTDOWN_TIMEOUT" "value" (toString $c.shutdownTimeout)) -}}
{{- $env = append $env (dict "name" "METRICS_ADDR" "value" (printf "0.0.0.0:%d" (.Values.metrics.port | int))) -}}
{{- if .Values.admin.expose -}}
{{- $env = append $env (dict "name" "ADMIN_ADDR" "value" (printf "0.0.0.0:%d" (.Values.admin.port | int))) -}}
{{- $env = append $env (dict "name" "ADMIN_TOKEN" "valueFrom" (dict "secretKeyRef" (dict "name" (include "wadispatch.adminSecret" .) "key" .Values.admin.secretKey))) -}}
{{- else -}}
{{- $env = append $env (dict "name" "ADMIN_ADDR" "value" (printf "127.0.0.1:%d" (.Values.admin.port | int))) -}}
{{- end -}}
{{- $overridden := list -}}
{{- range .Values.extraEnv -}}
{{- $overridden = append $overridden .name -}}
{{- end -}}
{{- $out := list -}}
{{- range $env -}}
{{- if not (has .name $overridden) -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- toYaml (concat $out .Values.extraEnv) -}}
{{- end -}}

{{/* wadispatch.probe: a probe on /readyz (ready) or /healthz. */}}
{{- define "wadispatch.probe" -}}
{{- $v := .root.Values -}}
{{- $p := ternary $v.probes.readiness $v.probes.liveness .ready -}}
{{- if eq $v.probes.mode "exec" }}
exec:
  command:
    {{- toYaml (concat $v.probes.execCommand (ternary (list "probe" "--ready") (list "probe") .ready)) | nindent 4 }}
{{- else }}
httpGet:
  path: {{ ternary "/readyz" "/healthz" .ready }}
  port: metrics
{{- end }}
{{- toYaml $p | nindent 0 }}
{{- end -}}
