#!/usr/bin/env bash
# deploy-eks.sh ENV: apply ENV's validated, digest-pinned render to an EKS cluster.
#
# Runs only when it can run for real. Without AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_REGION and EKS_CLUSTER_NAME it records "not deployed" with the missing names (the
# deployment summary shows it) and exits 0: a pipeline without a cloud account is not a
# failure, and it never claims a deploy that did not happen. In CI the AWS_* come from
# aws-actions/configure-aws-credentials: the environment's role through GitHub's OIDC token
# (short-lived, with AWS_SESSION_TOKEN), or the long-lived keys as a fallback. What the role
# may do in the cluster: k8s/eks-deployer-rbac.yaml (the EKS access entry's group).
#
# With them, GRAFANA_ADMIN_PASSWORD is required too (k8s/render-monitoring.sh refuses to render
# Grafana for a real cluster as admin/admin: one line, exit 1, nothing applied).
# EKS only ever gets images pinned by digest (ORION_API_IMAGE / ORION_WORKER_IMAGE
# = <repo>@sha256:...), the render must have the sha256 the validate job produced
# (ORION_EXPECT_MANIFEST_SHA256, when set), then a preflight, then apply (monitoring stack +
# overlay), rollouts and the same smoke test as kind, through port-forward. A rollout that
# fails undoes every Deployment this deploy changed back to its revision from before the
# apply (kubectl rollout undo --to-revision, waited for), prints the diagnostics and fails.
#
# Preflight: before anything is applied, each of these that fails prints one line, and the
# deploy stops (exit 1) with nothing applied:
#   - NetworkPolicies are enforced, else "deny everything by default" would be silently false.
#     The VPC CNI accepts them and ignores them unless network policy is on (off by default:
#     add-on setting enableNetworkPolicy, which starts aws-node's aws-eks-nodeagent with
#     --enable-network-policy=true and sets enable-network-policy-controller in ConfigMap
#     kube-system/amazon-vpc-cni). EKS Auto Mode has no aws-node: there that ConfigMap alone
#     switches it on. Calico (kube-system, or calico-system from the Tigera operator), Cilium,
#     Antrea and kube-router enforce whenever they run.
#   - a default StorageClass exists: Prometheus keeps 31 days on a PersistentVolumeClaim
#     without storageClassName, which otherwise stays Pending (EKS Auto Mode creates no
#     StorageClass; elsewhere the EBS CSI driver add-on provides gp2/gp3).
#   - v1beta1.metrics.k8s.io is served and Available (metrics-server): otherwise the api's
#     HPA never scales.
#   - the nodes can pull the images. GHCR packages pushed with GITHUB_TOKEN start PRIVATE and
#     the manifests carry no imagePullSecrets. Either make both packages public (checked here
#     with an anonymous pull token for each digest), or create a docker-registry Secret in the
#     namespace, add it to the ServiceAccount `orion` (imagePullSecrets) and set
#     ORION_IMAGE_PULL_SECRET to its name (checked here: the Secret exists and the
#     ServiceAccount names it; `kubectl apply` keeps that field, it is not in the manifests).
#     Images in ECR are pulled with the node role and not checked.
set -euo pipefail

# shellcheck source=scripts/deploy-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/deploy-lib.sh"
ORION_LOG_PREFIX=deploy-eks

env="${1:-}"
[ -n "$env" ] || orion_die "usage: deploy-eks.sh ENV"
ns="$(orion_env_get "$env" namespace)"

missing=()
for var in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION EKS_CLUSTER_NAME; do
  [ -n "${!var:-}" ] || missing+=("$var")
done
if [ ${#missing[@]} -gt 0 ]; then
  orion_result eks "not deployed: ${missing[*]} not configured"
  orion_log "EKS deploy skipped: ${missing[*]} not configured (nothing was deployed to EKS;" \
    "CI: the variables AWS_ROLE_ARN, AWS_REGION, EKS_CLUSTER_NAME, or the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY secrets)"
  exit 0
fi

api="${ORION_API_IMAGE:-}" worker="${ORION_WORKER_IMAGE:-}"
for ref in "$api" "$worker"; do
  case "$ref" in
    *@sha256:*) ;;
    *) orion_result eks "FAILED: image '${ref}' is not pinned by digest"
       orion_die "EKS deploys only digest-pinned images; got '${ref}' (set ORION_API_IMAGE/ORION_WORKER_IMAGE)" ;;
  esac
done
command -v aws >/dev/null || orion_die "the aws CLI is not installed"

phase=render
on_exit() {
  local rc=$?
  # The preflight records its own reasons.
  if [ "$rc" -ne 0 ] && [ "$phase" != preflight ]; then
    orion_result eks "FAILED during $phase on $EKS_CLUSTER_NAME ($AWS_REGION)"
  fi
}
trap on_exit EXIT

out="${ORION_OUT_DIR:-$ORION_ROOT/.tmp/deploy}"
manifest="$out/$env.eks.yaml"
sha="$(orion_render "$env" "$manifest" "$api" "$worker")"
if [ -n "${ORION_EXPECT_MANIFEST_SHA256:-}" ] && [ "$sha" != "$ORION_EXPECT_MANIFEST_SHA256" ]; then
  orion_die "render $sha differs from the validated one $ORION_EXPECT_MANIFEST_SHA256"
fi
# A real cluster: the renderer refuses Grafana without GRAFANA_ADMIN_PASSWORD.
orion_render_monitoring "$out/monitoring.eks.yaml" "$env"

phase=kubeconfig
KUBECONFIG="$(mktemp)"
export KUBECONFIG
aws eks update-kubeconfig --name "$EKS_CLUSTER_NAME" --region "$AWS_REGION" --kubeconfig "$KUBECONFIG" >/dev/null
orion_use_cluster_kubectl

phase=preflight
# preflight_pull REF: can the nodes pull REF (see the header)?
preflight_pull() {
  local ref="$1" registry path digest token secret names
  registry="${ref%%/*}" path="${ref#*/}" path="${path%@*}" digest="${ref##*@}"
  if [ -n "${ORION_IMAGE_PULL_SECRET:-}" ]; then
    secret="$ORION_IMAGE_PULL_SECRET"
    "$KUBECTL" -n "$ns" get secret "$secret" -o name >/dev/null 2>&1 ||
      { echo "pull secret $ns/$secret does not exist (create it before the first deploy)"; return 1; }
    names="$("$KUBECTL" -n "$ns" get serviceaccount orion -o 'jsonpath={.imagePullSecrets[*].name}' 2>/dev/null)" || names=""
    case " $names " in
      *" $secret "*) return 0 ;;
      *) echo "ServiceAccount $ns/orion does not list imagePullSecrets $secret (kubectl -n $ns patch serviceaccount orion -p '{\"imagePullSecrets\":[{\"name\":\"$secret\"}]}')"; return 1 ;;
    esac
  fi
  case "$registry" in
    *.dkr.ecr.*.amazonaws.com) return 0 ;;
    ghcr.io) ;;
    *) echo "cannot check whether nodes can pull $ref anonymously; set ORION_IMAGE_PULL_SECRET"; return 1 ;;
  esac
  if token="$(curl -fsS --max-time 10 "https://ghcr.io/token?scope=repository:$path:pull" 2>/dev/null |
                "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["token"])' 2>/dev/null)" &&
     curl -fsS --max-time 10 -o /dev/null --head -H "Authorization: Bearer $token" \
       -H "Accept: application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json" \
       "https://ghcr.io/v2/$path/manifests/$digest" 2>/dev/null; then
    return 0
  fi
  echo "$ref is not pullable anonymously (GHCR packages pushed with GITHUB_TOKEN start private, the manifests have no imagePullSecrets): make the package public or set ORION_IMAGE_PULL_SECRET"
  return 1
}

preflight_failed=()
# What enforces NetworkPolicies (scripts/deploy-tool.py netpol-enforcer says what each source
# means): the DaemonSets of kube-system (VPC CNI aws-node, Calico, Cilium, Antrea, kube-router)
# and calico-system (Calico by the Tigera operator; an absent namespace lists as empty), the
# VPC CNI's ConfigMap, and the EKS Auto Mode nodes (no aws-node there).
netpol="$(mktemp -d)"
if ! "$KUBECTL" -n kube-system get daemonsets -o json >"$netpol/kube-system.json" 2>/dev/null ||
   ! "$KUBECTL" -n calico-system get daemonsets -o json >"$netpol/calico-system.json" 2>/dev/null; then
  preflight_failed+=("cannot list DaemonSets in kube-system and calico-system to see what enforces NetworkPolicies")
elif ! "$KUBECTL" -n kube-system get configmap amazon-vpc-cni --ignore-not-found -o json >"$netpol/configmap.json" 2>/dev/null; then
  preflight_failed+=("cannot read ConfigMap kube-system/amazon-vpc-cni to see whether network policy is on")
elif ! auto_nodes="$("$KUBECTL" get nodes -l eks.amazonaws.com/compute-type=auto -o name 2>/dev/null)"; then
  preflight_failed+=("cannot list nodes to see whether this is EKS Auto Mode")
elif ! why="$(orion_tool netpol-enforcer "$netpol/kube-system.json" "$netpol/calico-system.json" \
                --configmap "$netpol/configmap.json" --auto-mode-nodes "$(grep -c . <<<"$auto_nodes" || true)")"; then
  preflight_failed+=("NetworkPolicies would not be enforced: $why")
else
  orion_log "NetworkPolicy enforcer: $why"
fi
rm -rf "$netpol"
classes="$(mktemp)"
if ! "$KUBECTL" get storageclass -o json >"$classes" 2>/dev/null; then
  preflight_failed+=("cannot list StorageClasses to see which provisions Prometheus's PersistentVolumeClaim")
elif ! why="$(orion_tool default-storage-class "$classes")"; then
  preflight_failed+=("$why")
fi
rm -f "$classes"
available="$("$KUBECTL" get apiservice v1beta1.metrics.k8s.io \
  -o 'jsonpath={.status.conditions[?(@.type=="Available")].status}' 2>/dev/null)" || available=missing
if [ "$available" != True ]; then
  preflight_failed+=("v1beta1.metrics.k8s.io is ${available:-not Available} (install metrics-server, e.g. the EKS add-on): the api HPA would never scale")
fi
for ref in "$api" "$worker"; do
  why="$(preflight_pull "$ref")" || preflight_failed+=("nodes cannot pull images: $why")
done
if [ ${#preflight_failed[@]} -gt 0 ]; then
  for why in "${preflight_failed[@]}"; do orion_log "preflight: $why"; done
  orion_result eks "FAILED preflight on $EKS_CLUSTER_NAME (nothing applied): ${preflight_failed[*]}"
  exit 1
fi
orion_log "preflight ok: NetworkPolicies enforced, default StorageClass, metrics API available, images pullable"

phase=apply
# What a failed rollout goes back to: orion_rollout undoes every one of these to the revision
# it had before this apply, waits for that, and then the diagnostics are printed.
ORION_ROLLBACK_KEY=eks_rollback
orion_remember_revisions "$ns" api worker
orion_remember_revisions monitoring prometheus alertmanager grafana
"$KUBECTL" apply -f "$out/monitoring.eks.yaml"
"$KUBECTL" apply -f "$manifest"

phase=rollout
if ! orion_rollout "$ns" api worker || ! orion_rollout monitoring prometheus alertmanager grafana; then
  orion_diagnostics "$ns" monitoring
  exit 1
fi

phase=smoke
ORION_RESULTS="${ORION_RESULTS:-$(mktemp)}"
orion_smoke "$ns"
orion_result eks "deployed to $EKS_CLUSTER_NAME ($AWS_REGION), namespace $ns, manifest sha256 ${sha:0:12}…, rollouts and smoke ok"
