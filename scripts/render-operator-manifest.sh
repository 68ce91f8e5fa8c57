#!/usr/bin/env bash
# Prints deploy/kubernetes/operator.yaml, the kustomize install of the operator: the Helm chart
# (deploy/helm/photon-operator) rendered with its defaults into photon-system, without the
# chart's own labels. One source for both installs; scripts/validate-manifests.sh checks that the
# file is this output. Usage: scripts/render-operator-manifest.sh HELM > deploy/kubernetes/operator.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
helm=${1:?usage: $0 HELM}
echo "# Generated from the Helm chart by scripts/render-operator-manifest.sh; edit the chart, not this file."
"$helm" template photon-operator deploy/helm/photon-operator --namespace photon-system --set chartLabels=false 2>/dev/null
