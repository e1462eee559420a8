{{- /*
The two webhook configurations. Each takes a dict: root (the top-level context), url (the base URL
of webhook.url mode, or empty), caBundle (empty when it is filled in later: by stsguard when it
registers them, by cert-manager's cainjector otherwise) and injectFrom (the cert-manager
Certificate for cainjector, or empty).
*/}}
{{- define "stsguard.validatingConfiguration" -}}
{{- $root := .root }}
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: {{ include "stsguard.fullname" $root }}
  labels:
    {{- include "stsguard.webhookLabels" $root | nindent 4 }}
  {{- with .injectFrom }}
  annotations:
    cert-manager.io/inject-ca-from: {{ . }}
  {{- end }}
webhooks:
  - name: validate.stsguard.io
    admissionReviewVersions: ["v1"]
    sideEffects: None
    matchPolicy: Equivalent
    timeoutSeconds: {{ int $root.Values.webhook.timeoutSeconds }}
    failurePolicy: {{ include "stsguard.validatingFailurePolicy" $root }}
    clientConfig:
      {{- include "stsguard.webhook.clientConfig" (dict "root" $root "path" "/validate" "url" .url "caBundle" .caBundle) | trim | nindent 6 }}
    # The objects themselves only: no subresources (statefulsets/scale, statefulsets/status).
    rules:
      - apiGroups: ["apps"]
        apiVersions: ["v1"]
        resources: ["statefulsets"]
        operations: ["CREATE", "UPDATE"]
        scope: Namespaced
      # DELETE only to warn about the StatefulSets that lose their governing Service.
      - apiGroups: [""]
        apiVersions: ["v1"]
        resources: ["services"]
        operations: ["CREATE", "UPDATE", "DELETE"]
        scope: Namespaced
    {{- include "stsguard.webhook.selectors" $root | trim | nindent 4 }}
    {{- include "stsguard.webhook.matchConditions" $root | trim | nindent 4 }}
{{- end }}

{{- define "stsguard.mutatingConfiguration" -}}
{{- $root := .root }}
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {{ include "stsguard.fullname" $root }}
  labels:
    {{- include "stsguard.webhookLabels" $root | nindent 4 }}
  {{- with .injectFrom }}
  annotations:
    cert-manager.io/inject-ca-from: {{ . }}
  {{- end }}
webhooks:
  - name: mutate.stsguard.io
    admissionReviewVersions: ["v1"]
    sideEffects: None
    matchPolicy: Equivalent
    reinvocationPolicy: IfNeeded
    timeoutSeconds: {{ int $root.Values.webhook.timeoutSeconds }}
    failurePolicy: {{ $root.Values.webhook.failurePolicy.mutating }}
    clientConfig:
      {{- include "stsguard.webhook.clientConfig" (dict "root" $root "path" "/mutate" "url" .url "caBundle" .caBundle) | trim | nindent 6 }}
    rules:
      - apiGroups: ["apps"]
        apiVersions: ["v1"]
        resources: ["statefulsets"]
        operations: ["CREATE"]
        scope: Namespaced
      {{- if $root.Values.webhook.mutateServices }}
      - apiGroups: [""]
        apiVersions: ["v1"]
        resources: ["services"]
        operations: ["CREATE"]
        scope: Namespaced
      {{- end }}
    {{- include "stsguard.webhook.selectors" $root | trim | nindent 4 }}
    {{- include "stsguard.webhook.matchConditions" $root | trim | nindent 4 }}
    {{- with include "stsguard.webhook.mutatorsCondition" $root | trim }}
    {{- . | nindent 6 }}
    {{- end }}
{{- end }}
