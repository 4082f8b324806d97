{{/* Names and labels. */}}
{{- define "sneakernet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sneakernet.fullname" -}}
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

{{/* The name of one role's objects: <fullname>-<role>. Call with (dict "root" $ "role" "auth"). */}}
{{- define "sneakernet.roleName" -}}
{{- printf "%s-%s" (include "sneakernet.fullname" .root | trunc 54 | trimSuffix "-") .role -}}
{{- end -}}

{{- define "sneakernet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sneakernet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sneakernet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sneakernet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sneakernet
{{- end -}}

{{/* Call with (dict "root" $ "role" "auth"). */}}
{{- define "sneakernet.roleSelectorLabels" -}}
{{ include "sneakernet.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "sneakernet.roleLabels" -}}
{{ include "sneakernet.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "sneakernet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "sneakernet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sneakernet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The roles, in start order (auth first: the others verify tokens with its keys). */}}
{{- define "sneakernet.roles" -}}
auth orders content gateway
{{- end -}}

{{/* The gRPC service a role's readiness probe asks health about: NOT_SERVING while the role
     is shutting down or one of its supervised background tasks is down. */}}
{{- define "sneakernet.readinessService" -}}
{{- $services := dict "auth" "sneakernet.auth.v1.AuthService" "orders" "sneakernet.orders.v1.OrderService" "content" "sneakernet.content.v1.ContentService" "gateway" "sneakernet.gateway.v1.KioskLinkService" -}}
{{- get $services . -}}
{{- end -}}

{{/* A peer's URL inside the cluster: its Service, http or https by tls.enabled. */}}
{{- define "sneakernet.peerUrl" -}}
{{- $scheme := ternary "https" "http" .root.Values.tls.enabled -}}
{{- printf "%s://%s.%s.svc:%d" $scheme (include "sneakernet.roleName" .) .root.Release.Namespace (int .root.Values.grpcPort) -}}
{{- end -}}

{{/* The chart's own Secret holds the values given in clear; these say which Secret and key
     each secret value comes from. */}}
{{- define "sneakernet.databaseSecret" -}}
{{- if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else -}}
{{- include "sneakernet.fullname" . -}}
{{- end -}}
{{- end -}}
{{- define "sneakernet.databaseSecretKey" -}}
{{- ternary .Values.database.existingSecretKey "database-url" (ne .Values.database.existingSecret "") -}}
{{- end -}}

{{- define "sneakernet.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret -}}true{{- end -}}
{{- end -}}
{{- define "sneakernet.redisSecret" -}}
{{- default (include "sneakernet.fullname" .) .Values.redis.existingSecret -}}
{{- end -}}
{{- define "sneakernet.redisSecretKey" -}}
{{- ternary .Values.redis.existingSecretKey "redis-url" (ne .Values.redis.existingSecret "") -}}
{{- end -}}

{{- define "sneakernet.s3CredentialsEnabled" -}}
{{- if and (eq .Values.objectStore.kind "s3") (or .Values.objectStore.s3.existingSecret .Values.objectStore.s3.accessKeyId) -}}true{{- end -}}
{{- end -}}

{{- define "sneakernet.bootstrapOperatorSecret" -}}
{{- default (include "sneakernet.fullname" .) .Values.bootstrapOperator.existingSecret -}}
{{- end -}}
{{- define "sneakernet.bootstrapOperatorSecretKey" -}}
{{- ternary .Values.bootstrapOperator.existingSecretKey "bootstrap-operator-password" (ne .Values.bootstrapOperator.existingSecret "") -}}
{{- end -}}

{{- define "sneakernet.ordersServiceCredentialSecret" -}}
{{- default (printf "%s-orders-service-credential" (include "sneakernet.fullname" .)) .Values.ordersServiceCredential.existingSecret -}}
{{- end -}}

{{- define "sneakernet.ordersKeySecret" -}}
{{- default (printf "%s-orders-key" (include "sneakernet.fullname" .)) .Values.ordersSecretKey.existingSecret -}}
{{- end -}}

{{/* A role's replica ceiling: its replicas, or its autoscaler's maximum. */}}
{{- define "sneakernet.maxReplicas" -}}
{{- $role := get .root.Values.roles .role -}}
{{- if and (hasKey $role "autoscaling") $role.autoscaling.enabled -}}
{{- $role.autoscaling.maxReplicas -}}
{{- else -}}
{{- $role.replicas -}}
{{- end -}}
{{- end -}}

{{/* What the schema cannot say: combinations that would start but misbehave. */}}
{{- define "sneakernet.checks" -}}
{{- if and (not .Values.database.url) (not .Values.database.existingSecret) -}}
{{- fail "database.url or database.existingSecret is required: the services keep their state in an external Postgres (the chart never runs one)" -}}
{{- end -}}
{{- if and (gt (int (include "sneakernet.maxReplicas" (dict "root" . "role" "gateway"))) 1) (not (include "sneakernet.redisEnabled" .)) -}}
{{- fail "more than one gateway replica (roles.gateway.replicas or its autoscaling) needs redis.url or redis.existingSecret: replicas route commands to each other's kiosks through Redis" -}}
{{- end -}}
{{- if and (eq .Values.objectStore.kind "local") (gt (int (include "sneakernet.maxReplicas" (dict "root" . "role" "content"))) 1) -}}
{{- fail "more than one content replica needs objectStore.kind s3: a local store is one pod's volume" -}}
{{- end -}}
{{- if and (eq .Values.objectStore.kind "s3") (not .Values.objectStore.s3.bucket) -}}
{{- fail "objectStore.s3.bucket is required when objectStore.kind is s3" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) -}}
{{- fail "tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret with tls.crt and tls.key)" -}}
{{- end -}}
{{- if and .Values.bootstrapOperator.email (not (or .Values.bootstrapOperator.password .Values.bootstrapOperator.existingSecret)) -}}
{{- fail "bootstrapOperator.email needs bootstrapOperator.password or bootstrapOperator.existingSecret" -}}
{{- end -}}
{{- end -}}

{{/* The shared configuration as SNEAKERNET_* variables: one per leaf of .Values.config,
     nested keys joined by "__". Call with (dict "prefix" "SNEAKERNET_" "values" .Values.config). */}}
{{- define "sneakernet.configEnv" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .values }}
{{- $name := printf "%s%s" $prefix (upper $key) }}
{{- if kindIs "map" $value }}
{{- include "sneakernet.configEnv" (dict "prefix" (printf "%s__" $name) "values" $value) }}
{{- else if kindIs "float64" $value }}
{{ $name }}: {{ int64 $value | toString | quote }}
{{- else }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}
