#!/usr/bin/env bash
# End-to-end test on a real Kubernetes cluster: kind, or any cluster the current KUBECONFIG
# context reaches. It builds the image (docker), loads it into kind when the context is a kind
# cluster, installs the operator (deploy/kubernetes), applies the sample PhotonService, and
# checks: the service turns Running and answers through rayservice-sample-serve-svc; a
# serveConfigV2 change is applied in place (same head pod, new price); a cluster spec change
# upgrades to a new cluster without a failed request; deleting the resource removes every pod.
# Where no cluster is reachable it prints why and exits 0.
#   PHOTON_IMAGE=photon:e2e  image to build and run (SKIP_BUILD=1 to use an existing one)
#   E2E_NAMESPACE=photon-e2e namespace for the sample (deleted at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
skip() { echo "kubernetes-e2e: skipped: $*"; exit 0; }
command -v kubectl >/dev/null 2>&1 || skip "kubectl is not installed"
kubectl version --request-timeout=5s >/dev/null 2>&1 || skip "no Kubernetes cluster is reachable (start kind or set KUBECONFIG)"

IMAGE=${PHOTON_IMAGE:-photon:e2e}
NS=${E2E_NAMESPACE:-photon-e2e}
SAMPLE=deploy/kubernetes/samples/photon-service.sample.yaml
NAME=rayservice-sample
fail() { echo "kubernetes-e2e: FAILED: $*" >&2; kubectl -n "$NS" get photonservice,pods,svc -o wide >&2 || true; exit 1; }

if [ -z "${SKIP_BUILD:-}" ]; then
  docker build -t "$IMAGE" .
fi
context=$(kubectl config current-context)
if [[ "$context" == kind-* ]]; then
  kind load docker-image "$IMAGE" --name "${context#kind-}"
fi

kubectl apply --server-side -k deploy/kubernetes
kubectl -n photon-system set image deployment/photon-operator operator="$IMAGE"
kubectl -n photon-system set env deployment/photon-operator PHOTON_IMAGE="$IMAGE"
kubectl -n photon-system rollout status deployment/photon-operator --timeout=180s

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
cleanup() { kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

# One request from inside the cluster to the serve Service.
call() {
  kubectl -n "$NS" run "curl-$RANDOM" --image=curlimages/curl:8.11.1 --restart=Never --rm -i --quiet -- \
    curl -s -m 10 -X POST -H 'content-type: application/json' "http://$NAME-serve-svc:8000$1" -d "$2"
}
active() { kubectl -n "$NS" get photonservice "$NAME" -o jsonpath='{.status.activeServiceStatus.rayClusterName}'; }

kubectl -n "$NS" apply -f "$SAMPLE"
kubectl -n "$NS" wait --for=jsonpath='{.status.serviceStatus}'=Running "photonservice/$NAME" --timeout=600s \
  || fail "the service did not turn Running"
[ "$(call /fruit/ '["MANGO", 2]')" = 6 ] || fail "/fruit/ [MANGO, 2] is not 6"
[ "$(call /calc/ '["MUL", 3]')" = "15 pizzas please!" ] || fail "/calc/ [MUL, 3] is not 15 pizzas please!"

# In place: MangoStand's price 3 -> 4; the head pod stays.
cluster=$(active)
head_uid=$(kubectl -n "$NS" get pod "$cluster-head" -o jsonpath='{.metadata.uid}')
sed 's/price: 3/price: 4/' "$SAMPLE" | kubectl -n "$NS" apply -f -
for _ in $(seq 60); do [ "$(call /fruit/ '["MANGO", 2]')" = 8 ] && break; sleep 2; done
[ "$(call /fruit/ '["MANGO", 2]')" = 8 ] || fail "the in-place update did not reach the replicas"
[ "$(kubectl -n "$NS" get pod "$cluster-head" -o jsonpath='{.metadata.uid}')" = "$head_uid" ] || fail "the head pod was replaced"

# Upgrade: a cluster spec change makes a new cluster; requests keep succeeding.
kubectl -n "$NS" patch photonservice "$NAME" --type merge \
  -p '{"spec":{"rayClusterConfig":{"headGroupSpec":{"template":{"metadata":{"labels":{"e2e":"upgraded"}}}}}}}'
for _ in $(seq 150); do
  [ "$(call /fruit/ '["MANGO", 2]')" = 8 ] || fail "a request failed during the upgrade"
  [ "$(active)" != "$cluster" ] && break
  sleep 2
done
[ "$(active)" != "$cluster" ] || fail "the upgrade did not promote a new cluster"
kubectl -n "$NS" wait --for=delete "pod/$cluster-head" --timeout=180s || fail "the old cluster was not deleted"

# Deletion removes everything.
kubectl -n "$NS" delete photonservice "$NAME" --timeout=120s
kubectl -n "$NS" wait --for=delete pod -l "ray.io/originated-from-cr-name=$NAME" --timeout=120s || true
[ -z "$(kubectl -n "$NS" get pods -o name)" ] || fail "pods remain after deletion"
echo "kubernetes-e2e: passed"
