#!/usr/bin/env bash
# Validates every Kubernetes manifest Photon ships or generates, offline, against the
# Kubernetes schemas (PyPI's kubernetes-validate, installed into target/validate-venv):
# the install manifests in deploy/kubernetes, the CRD `photon operator crd` prints (which must
# equal deploy/kubernetes/crd.yaml), and every object `photon operator render` makes for the
# sample (Services, head and proxy pods, a replica pod, RBAC). The sample PhotonService is
# checked against the CRD's own schema, rejecting unknown fields.
set -euo pipefail
cd "$(dirname "$0")/.."
PHOTON=${PHOTON:-target/debug/photon}
VENV=target/validate-venv
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q kubernetes-validate==1.37.0 jsonschema
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
for version in 1.33.0 1.37.0; do
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" \
    deploy/kubernetes/namespace.yaml deploy/kubernetes/rbac.yaml deploy/kubernetes/operator.yaml \
    deploy/kubernetes/crd.yaml "$out/rendered.yaml"
done
"$VENV/bin/python" scripts/validate_custom_resource.py deploy/kubernetes/crd.yaml deploy/kubernetes/samples/*.yaml
echo "manifests: all valid (install manifests, CRD, $(grep -c '^---' "$out/rendered.yaml") rendered objects, samples)"
