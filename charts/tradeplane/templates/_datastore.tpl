{{/*
A single-replica StatefulSet + Service for a bundled server, hardened like the rest.
(dict "ctx" $ "name" "nats" "uid" 1000 "values" .Values.nats.bundled "ports" (list ...)
      "container" YAML-string "extraVolumes" YAML-string)
The container fragment gets the data volume at /data via the volume name "data".
*/}}
{{- define "tradeplane.datastore" -}}
{{- $ctx := .ctx -}}
{{- $c := dict "ctx" $ctx "component" .name -}}
{{- $fullname := printf "%s-%s" (include "tradeplane.fullname" $ctx) .name -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ $fullname }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "tradeplane.componentLabels" $c | nindent 4 }}
spec:
  replicas: 1
  serviceName: {{ $fullname }}
  selector:
    matchLabels:
      {{- include "tradeplane.componentSelectorLabels" $c | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "tradeplane.componentLabels" $c | nindent 8 }}
    spec:
      {{- if .serviceAccount }}
      serviceAccountName: {{ .serviceAccount }}
      {{- else }}
      automountServiceAccountToken: false
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: {{ .uid }}
        runAsGroup: {{ .uid }}
        fsGroup: {{ .uid }}
        seccompProfile:
          type: RuntimeDefault
      containers:
        {{- .container | trim | nindent 8 }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          securityContext:
            {{- include "tradeplane.containerSecurityContext" $ctx | nindent 12 }}
      volumes:
        {{- include "tradeplane.tmpVolume" $ctx | nindent 8 }}
        {{- with .extraVolumes }}
        {{- . | trim | nindent 8 }}
        {{- end }}
  volumeClaimTemplates:
    - metadata:
        name: data
      spec:
        accessModes: [ReadWriteOnce]
        {{- with .values.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ .values.storage }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullname }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "tradeplane.componentLabels" $c | nindent 4 }}
spec:
  selector:
    {{- include "tradeplane.componentSelectorLabels" $c | nindent 4 }}
  ports:
    {{- range .ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .port }}
    {{- end }}
{{- end -}}
