#!/usr/bin/env bash
# Offline checks of deploy/: the Prometheus rules (promtool check + unit tests), the
# Grafana dashboard (well-formed JSON), the compose file (against the compose-spec
# schema committed in deploy/schemas) and the Kubernetes manifests (kubernetes-validate,
# strict; the ServiceMonitor against its CRD's schema, committed in deploy/schemas).
# scripts/test.sh runs it; alone it needs promtool (Debian: prometheus) and a Python
# with check-jsonschema and kubernetes-validate:
#   METERLINE_PYTHON=~/.cache/meterline-tools/venv/bin/python scripts/check-deploy.sh
# Nothing here runs a container: no image can be pulled in CI, so the compose stack and
# the manifests are validated, not run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${METERLINE_PYTHON:-python3}"
BIN="$(dirname "$PY")"
PROMTOOL="${METERLINE_PROMTOOL:-promtool}"

echo "promtool check rules"
"$PROMTOOL" check rules deploy/prometheus/alerts.yml deploy/prometheus/recording.yml
echo "promtool test rules"
(cd deploy/prometheus && "$PROMTOOL" test rules tests/*.yml)

echo "grafana dashboard: well-formed JSON with panels"
"$PY" - <<'PY'
import json
d = json.load(open("deploy/grafana/meterline.json"))
panels = [p for p in d["panels"] if p.get("type") != "row"]
assert panels, "no panels"
assert all(t.get("expr") for p in panels for t in p.get("targets", [])), "a target without expr"
print(f"  {len(panels)} panels")
PY

echo "compose file against the compose-spec schema"
"$BIN/check-jsonschema" --schemafile deploy/schemas/compose-spec.json deploy/compose/compose.yaml

echo "kubernetes manifests (strict)"
"$BIN/kubernetes-validate" --strict --quiet \
    deploy/kubernetes/{serviceaccount,configmap,deployment,service,pdb}.yaml
"$BIN/check-jsonschema" --schemafile deploy/schemas/servicemonitor-v1.json \
    deploy/kubernetes/servicemonitor.yaml
echo "deploy/ checks passed"
