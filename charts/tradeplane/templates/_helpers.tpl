{{/* Names, labels and shared fragments of the tradeplane chart. */}}

{{/* The chart name (nameOverride wins). */}}
{{- define "tradeplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The resource-name prefix: release name, plus the chart name unless it is in it. */}}
{{- define "tradeplane.fullname" -}}
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

{{/* chart label value: name-version. */}}
{{- define "tradeplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "tradeplane.labels" -}}
helm.sh/chart: {{ include "tradeplane.chart" . }}
{{ include "tradeplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tradeplane
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels (stable across upgrades). */}}
{{- define "tradeplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tradeplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: (dict "ctx" $ "component" "gateway"). */}}
{{- define "tradeplane.componentLabels" -}}
{{ include "tradeplane.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway"). */}}
{{- define "tradeplane.componentSelectorLabels" -}}
{{ include "tradeplane.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The tradeplane image reference. */}}
{{- define "tradeplane.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Name of the environment Secret every process reads. */}}
{{- define "tradeplane.envSecretName" -}}
{{- default (printf "%s-env" (include "tradeplane.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Pod service-account fields of the platform processes: the token is mounted only
when Vault is used (its Kubernetes auth logs in with it). */}}
{{- define "tradeplane.platformServiceAccount" -}}
serviceAccountName: {{ include "tradeplane.fullname" . }}
automountServiceAccountToken: {{ ternary "true" "false" (ne (include "tradeplane.vaultAddress" .) "") }}
{{- end -}}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "tradeplane.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "tradeplane.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
A secret value kept across upgrades: the given value, else the one already stored in the
Secret (lookup; empty under `helm template`), else a new random one.
(dict "ctx" $ "secret" NAME "key" KEY "value" VALUE "length" N)
*/}}
{{- define "tradeplane.persistentSecret" -}}
{{- if .value -}}
{{- .value -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $existing (index $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum (int .length) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* In-cluster service host names of the bundled servers. */}}
{{- define "tradeplane.natsHost" -}}{{ include "tradeplane.fullname" . }}-nats{{- end -}}
{{- define "tradeplane.postgresHost" -}}{{ include "tradeplane.fullname" . }}-postgresql{{- end -}}
{{- define "tradeplane.redisHost" -}}{{ include "tradeplane.fullname" . }}-redis{{- end -}}

{{/* Vault address seen by the pods: bundled, external or empty. */}}
{{- define "tradeplane.vaultAddress" -}}
{{- if .Values.vault.bundled.enabled -}}
{{- printf "http://%s-vault:8200" (include "tradeplane.fullname" .) -}}
{{- else -}}
{{- .Values.vault.address -}}
{{- end -}}
{{- end -}}

{{/* OTLP/HTTP traces endpoint: bundled Jaeger, external collector or empty (off). */}}
{{- define "tradeplane.otlpEndpoint" -}}
{{- if .Values.jaeger.enabled -}}
{{- printf "http://%s-jaeger:4318/v1/traces" (include "tradeplane.fullname" .) -}}
{{- else -}}
{{- .Values.otlpEndpoint -}}
{{- end -}}
{{- end -}}

{{/*
"true" when `tradeplane migrate` can run before the release's resources exist: an external
database and an existing Secret. Otherwise (bundled PostgreSQL or the chart's own Secret)
the first install migrates from init containers (see tradeplane.migrateInitContainer).
*/}}
{{- define "tradeplane.migrateBeforeInstall" -}}
{{- if and (not .Values.postgresql.bundled.enabled) .Values.secrets.existingSecret -}}
true
{{- end -}}
{{- end -}}

{{/* Helm hook phases of the migration job (see values.yaml, migrations). */}}
{{- define "tradeplane.migrationHook" -}}
{{- if include "tradeplane.migrateBeforeInstall" . -}}
pre-install,pre-upgrade
{{- else -}}
pre-upgrade
{{- end -}}
{{- end -}}

{{/*
initContainers entry running `tradeplane migrate` (idempotent, serialised by an advisory
lock) before a platform process starts, when the hook cannot run pre-install. No
post-install hook: `helm install --wait` would wait for pods that need the schema first.
*/}}
{{- define "tradeplane.migrateInitContainer" -}}
{{- if and .Values.migrations.enabled (not (include "tradeplane.migrateBeforeInstall" .)) }}
initContainers:
  - name: migrate
    image: {{ include "tradeplane.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command: [tradeplane, migrate]
    env:
      {{- include "tradeplane.env" . | nindent 6 }}
    envFrom:
      {{- include "tradeplane.envFrom" . | nindent 6 }}
    resources:
      {{- toYaml .Values.migrations.resources | nindent 6 }}
    securityContext:
      {{- include "tradeplane.containerSecurityContext" . | nindent 6 }}
    volumeMounts:
      {{- include "tradeplane.tmpMount" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* Pod-level security context (values podSecurityContext). */}}
{{- define "tradeplane.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{/* Container-level security context (values containerSecurityContext). */}}
{{- define "tradeplane.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{/*
Environment of every platform process: the env Secret, shared settings, OTLP and Vault.
*/}}
{{- define "tradeplane.env" -}}
- name: TRADEPLANE_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: TRADEPLANE_STREAM_REPLICAS
  value: {{ .Values.config.streamReplicas | quote }}
- name: TRADEPLANE_DEV_MODE
  value: {{ ternary "1" "0" .Values.config.devMode | quote }}
- name: TRADEPLANE_OTLP_ENDPOINT
  value: {{ include "tradeplane.otlpEndpoint" . | quote }}
{{- with include "tradeplane.vaultAddress" . }}
- name: TRADEPLANE_VAULT_ADDR
  value: {{ . | quote }}
- name: TRADEPLANE_VAULT_ROLE
  value: {{ $.Values.vault.role | quote }}
- name: TRADEPLANE_VAULT_KV_MOUNT
  value: {{ $.Values.vault.kvMount | quote }}
- name: TRADEPLANE_VAULT_PATH
  value: {{ $.Values.vault.path | quote }}
{{- end }}
{{- with .Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* envFrom of every platform process. */}}
{{- define "tradeplane.envFrom" -}}
- secretRef:
    name: {{ include "tradeplane.envSecretName" . }}
{{- end -}}

{{/* The writable /tmp every read-only-root container gets. */}}
{{- define "tradeplane.tmpVolume" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- end -}}
{{- define "tradeplane.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* imagePullSecrets block. */}}
{{- define "tradeplane.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Scheduling fields of a component values block. */}}
{{- define "tradeplane.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}
