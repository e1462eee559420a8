{{/* The chart name, or nameOverride. */}}
{{- define "stsguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified app name, also the Service's name (so at most 63 characters). A release
whose name already contains the chart name is used as is.
*/}}
{{- define "stsguard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "stsguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "stsguard.labels" -}}
helm.sh/chart: {{ include "stsguard.chart" . }}
{{ include "stsguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stsguard
{{- end }}

{{/* Labels that select the webhook pods; they never change between releases. */}}
{{- define "stsguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stsguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount of the webhook pods. */}}
{{- define "stsguard.serviceAccountName" -}}
{{- include "stsguard.fullname" . }}
{{- end }}

{{/* The container image. */}}
{{- define "stsguard.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
How the serving certificate is provided: "existingSecret", "certManager", "selfManaged" (stsguard
makes and renews it at run time) or "generated" (Helm, at render time). Setting both
existingSecret and certManager.enabled is an error.
*/}}
{{- define "stsguard.certMode" -}}
{{- if and .Values.existingSecret .Values.certManager.enabled }}
{{- fail "existingSecret and certManager.enabled are exclusive: choose one way to provide the serving certificate" }}
{{- else if .Values.existingSecret }}
{{- print "existingSecret" }}
{{- else if .Values.certManager.enabled }}
{{- print "certManager" }}
{{- else if eq .Values.certificates.mode "generated" }}
{{- print "generated" }}
{{- else }}
{{- print "selfManaged" }}
{{- end }}
{{- end }}

{{/*
Who creates the webhook configurations: "stsguard" (the leader, once its pod is Ready, from the
ConfigMap <fullname>-webhooks) or "helm" (with the release). webhook.url mode has no pods to
register them: Helm does.
*/}}
{{- define "stsguard.registration" -}}
{{- if .Values.webhook.url }}
{{- print "helm" }}
{{- else }}
{{- .Values.webhook.registration }}
{{- end }}
{{- end }}

{{/* The ConfigMap the leader registers the webhook configurations from. */}}
{{- define "stsguard.registrationConfigMap" -}}
{{- printf "%s-webhooks" (include "stsguard.fullname" .) }}
{{- end }}

{{/* The Secret of the self-managed certificates. */}}
{{- define "stsguard.selfManagedSecretName" -}}
{{- printf "%s-certs" (include "stsguard.fullname" .) }}
{{- end }}

{{/* The Secret that holds the serving certificate (tls.crt, tls.key). */}}
{{- define "stsguard.tlsSecretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "stsguard.fullname" .) }}
{{- end }}
{{- end }}

{{/* The cert-manager Certificate whose CA is injected into the webhook configurations. */}}
{{- define "stsguard.servingCertificateName" -}}
{{- printf "%s-serving" (include "stsguard.fullname" .) }}
{{- end }}

{{/* Labels of the webhook configurations: Helm's, or stsguard's when stsguard registers them. */}}
{{- define "stsguard.webhookLabels" -}}
{{- if eq (include "stsguard.registration" .) "helm" }}
{{- include "stsguard.labels" . }}
{{- else }}
{{- include "stsguard.labels" . | replace "app.kubernetes.io/managed-by: Helm" "app.kubernetes.io/managed-by: stsguard" }}
{{- end }}
{{- end }}

{{/* The DNS names the API server may use for the Service, as a list in YAML. */}}
{{- define "stsguard.dnsNames" -}}
{{- $svc := include "stsguard.fullname" . }}
{{- $ns := .Release.Namespace }}
- {{ $svc }}
- {{ printf "%s.%s" $svc $ns }}
- {{ printf "%s.%s.svc" $svc $ns }}
- {{ printf "%s.%s.svc.cluster.local" $svc $ns }}
{{- end }}

{{/* The policy text: .Values.policy, or the chart's copy of policies/default.yaml. */}}
{{- define "stsguard.policy" -}}
{{- if .Values.policy }}
{{- .Values.policy }}
{{- else }}
{{- .Files.Get "files/default-policy.yaml" }}
{{- end }}
{{- end }}

{{/*
Chooses the serving certificate of the "generated" mode, as YAML with base64 values
{ca.crt, tls.crt, tls.key, reused}. Takes a dict:
  root:     the top-level context;
  existing: the Secret found by lookup (an empty dict when there is none, as under
            `helm template`).
An existing Secret with all three keys is reused as is, so an upgrade keeps the CA that the
webhook configurations already trust; otherwise a new CA and certificate are generated.
*/}}
{{- define "stsguard.tls.select" -}}
{{- $root := .root }}
{{- $data := dig "data" (dict) .existing }}
{{- if and (get $data "ca.crt") (get $data "tls.crt") (get $data "tls.key") }}
ca.crt: {{ get $data "ca.crt" | quote }}
tls.crt: {{ get $data "tls.crt" | quote }}
tls.key: {{ get $data "tls.key" | quote }}
reused: true
{{- else }}
{{- $svc := include "stsguard.fullname" $root }}
{{- $days := int $root.Values.certValidityDays }}
{{- $ca := genCA (printf "%s-ca" $svc) $days }}
{{- $names := include "stsguard.dnsNames" $root | fromYamlArray }}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $root.Release.Namespace) nil $names $days $ca }}
ca.crt: {{ $ca.Cert | b64enc | quote }}
tls.crt: {{ $cert.Cert | b64enc | quote }}
tls.key: {{ $cert.Key | b64enc | quote }}
reused: false
{{- end }}
{{- end }}

{{/* The generated-mode certificate: the existing Secret's, or a new one. */}}
{{- define "stsguard.tls.generated" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "stsguard.tlsSecretName" .) | default (dict) }}
{{- include "stsguard.tls.select" (dict "root" . "existing" $existing) }}
{{- end }}

{{/*
The caBundle given in values, checked: it must be base64 of a PEM certificate. `what` names
the mode that needs it, for the error message.
*/}}
{{- define "stsguard.givenCaBundle" -}}
{{- $what := .what }}
{{- $bundle := .root.Values.caBundle | required (printf "%s needs caBundle: base64 of the PEM CA certificate that signed the webhook's serving certificate (e.g. base64 -w0 ca.crt)" $what) }}
{{- if not (contains "-----BEGIN CERTIFICATE-----" (b64dec $bundle)) }}
{{- fail "caBundle must be base64 of a PEM certificate (-----BEGIN CERTIFICATE-----); encode the PEM file with base64 -w0" }}
{{- end }}
{{- $bundle }}
{{- end }}

{{/*
Seconds in a stsguard duration (500ms, 20s, 2m, 1h), rounded up; for the check that
terminationGracePeriodSeconds outlasts --shutdown-grace.
*/}}
{{- define "stsguard.durationSeconds" -}}
{{- $n := regexFind "^[0-9]+" . | int }}
{{- $unit := regexReplaceAll "^[0-9]+" . "" }}
{{- if eq $unit "ms" }}{{ div (add $n 999) 1000 }}
{{- else if eq $unit "s" }}{{ $n }}
{{- else if eq $unit "m" }}{{ mul $n 60 }}
{{- else if eq $unit "h" }}{{ mul $n 3600 }}
{{- else }}{{ fail (printf "%q is not a duration such as 20s" .) }}
{{- end }}
{{- end }}

{{/*
A webhook's clientConfig. Takes a dict: root, path (/validate or /mutate), url (the base URL
of webhook.url mode, or empty for the Service), caBundle (empty when cert-manager injects it).
*/}}
{{- define "stsguard.webhook.clientConfig" -}}
{{- if .url }}
url: {{ printf "%s%s" .url .path | quote }}
{{- else }}
service:
  name: {{ include "stsguard.fullname" .root }}
  namespace: {{ .root.Release.Namespace }}
  path: {{ .path | quote }}
  port: 443
{{- end }}
{{- with .caBundle }}
caBundle: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
The selectors every webhook carries: the release namespace and kube-system are always
excluded, then webhook.namespaceSelector.excludeNamespaces; plus webhook.objectSelector.
*/}}
{{- define "stsguard.webhook.selectors" -}}
{{- $excluded := concat (list .Release.Namespace "kube-system") (.Values.webhook.namespaceSelector.excludeNamespaces | default list) | uniq }}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- toYaml $excluded | nindent 8 }}
{{- with .Values.webhook.objectSelector }}
objectSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- /*
The matchConditions every webhook carries: the API server skips the webhook (whatever its
failurePolicy) when any of them is false. They keep the control plane's own writes away from
stsguard, so that a broken or unreachable webhook can never stop the API server and the
controllers from reconciling (the API server rewrites default/kubernetes every few seconds).
One named entry per condition; add new ones to this list. Every expression must be null-safe:
`object` is null on DELETE, `oldObject` on CREATE; fields of `request` are tested with has().
*/}}
{{- define "stsguard.webhook.matchConditions" -}}
matchConditions:
  # The API server itself, the controller manager and the scheduler (their own identities, or
  # the per-controller service accounts in kube-system with --use-service-account-credentials).
  - name: not-control-plane
    expression: >-
      !has(request.userInfo.username) ||
      !(request.userInfo.username in ['system:apiserver', 'system:kube-controller-manager', 'system:kube-scheduler'] ||
      request.userInfo.username.startsWith('system:serviceaccount:kube-system:'))
  # The Service the API server reconciles for itself, whoever writes it.
  - name: not-default-kubernetes-service
    expression: >-
      !(request.resource.resource == 'services' &&
      has(request.namespace) && request.namespace == 'default' &&
      has(request.name) && request.name == 'kubernetes')
  # An UPDATE that leaves spec and stsguard's own annotations as they were (labels, other
  # annotations, finalizers, ownerReferences, status, a GitOps re-apply of the same manifest):
  # every rule and mutator reads only those (and the immutable name and namespace), so whatever
  # such an update would be denied for was already there before it and is grandfathered; the
  # verdict is "allowed" without asking. tests/update_skip_properties.rs proves it, and checks
  # that the keys listed here are all the annotations stsguard reads. Fixed keys rather than a
  # loop over the annotations keep the cost constant however many annotations an object has;
  # CREATE and DELETE (object or oldObject null) never reach the comparison.
  - name: update-changes-spec-or-stsguard-annotations
    expression: >-
      request.operation != 'UPDATE' ||
      has(object.spec) != has(oldObject.spec) ||
      (has(object.spec) && object.spec != oldObject.spec) ||
      ['stsguard.io/exempt', 'stsguard.io/exempt-reason', 'stsguard.io/exempt-until', 'stsguard.io/mutated'].exists(key,
      (has(object.metadata) && has(object.metadata.annotations) && key in object.metadata.annotations ? object.metadata.annotations[key] : null) !=
      (has(oldObject.metadata) && has(oldObject.metadata.annotations) && key in oldObject.metadata.annotations ? oldObject.metadata.annotations[key] : null))
{{- end }}

{{/*
The mutating webhook's own matchCondition, stsguard-mutators-could-act: /mutate is called only when
a mutator the policy enables could act (a volumeMount naming no volume and no template, a
volumeClaimTemplate missing accessModes or a storage request, a Service CREATE with clusterIP
unset when svc-make-headless is on). files/mutators-match-condition.yaml is generated from
files/default-policy.yaml (`stsguard policy export --format match-condition`; a test fails when it
is stale). With registration by stsguard the leader replaces it with the one generated from the
policy in force (a custom policy, a reload). The chart cannot generate CEL from a custom `policy`,
so with one under registration helm (and webhook.url) the condition is left out: /mutate is then
called for every CREATE, as without it; and so with webhook.mutateOnlyWhenNeeded false (the API
server never reinvokes a webhook it skipped in the first round).
*/}}
{{- define "stsguard.webhook.mutatorsCondition" -}}
{{- if and .Values.webhook.mutateOnlyWhenNeeded (or (not .Values.policy) (eq (include "stsguard.registration" .) "stsguard")) }}
{{- .Files.Get "files/mutators-match-condition.yaml" }}
{{- end }}
{{- end }}

{{/*
The validating webhook's failurePolicy: as set, or Ignore when the backstop enforces the
in-object rules while the webhook is down, Fail otherwise.
*/}}
{{- define "stsguard.validatingFailurePolicy" -}}
{{- if .Values.webhook.failurePolicy.validating }}
{{- .Values.webhook.failurePolicy.validating }}
{{- else if include "stsguard.backstopOn" . }}
{{- "Ignore" }}
{{- else }}
{{- "Fail" }}
{{- end }}
{{- end }}

{{/*
Whether the backstop is on: backstop.enabled, and a Service whose endpoints tell whether the
webhook answers (not with webhook.url). The name of its objects and of the ConfigMap the leader
applies it from.
*/}}
{{- define "stsguard.backstopOn" -}}
{{- if and .Values.backstop.enabled (not .Values.webhook.url) }}true{{ end }}
{{- end }}

{{- define "stsguard.backstopName" -}}
{{- printf "%s-backstop" (include "stsguard.fullname" .) }}
{{- end }}

{{/* The API group and resource of the in-cluster reports (reports.api). */}}
{{- define "stsguard.reportsGroup" -}}
{{- if eq .Values.reports.api "openreports" }}openreports.io{{ else }}wgpolicyk8s.io{{ end }}
{{- end }}

{{- define "stsguard.reportsResource" -}}
{{- if eq .Values.reports.api "openreports" }}reports{{ else }}policyreports{{ end }}
{{- end }}

{{/*
The Service in front of the probe port's /metrics. The fullname is cut first, so that a long one
still differs from the webhook's Service name.
*/}}
{{- define "stsguard.metricsServiceName" -}}
{{- printf "%s-metrics" (include "stsguard.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
The label matchers (without braces) of the series the alerts watch: metrics.prometheusRule.selector,
or the job and namespace that a ServiceMonitor's targets get (job: the Service's name).
*/}}
{{- define "stsguard.metricsSelector" -}}
{{- if .Values.metrics.prometheusRule.selector }}
{{- .Values.metrics.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q,namespace=%q" (include "stsguard.metricsServiceName" .) .Release.Namespace }}
{{- end }}
{{- end }}
