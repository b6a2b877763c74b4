#!/usr/bin/env bash
# deploy-eks.sh ENV: apply ENV's validated, digest-pinned render to an EKS cluster.
#
# Runs only when it can run for real. Without AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_REGION and EKS_CLUSTER_NAME it records "not deployed" with the missing names (the
# deployment summary shows it) and exits 0: a pipeline without a cloud account is not a
# failure, and it never claims a deploy that did not happen.
#
# With them: EKS only ever gets images pinned by digest (ORION_API_IMAGE / ORION_WORKER_IMAGE
# = <repo>@sha256:...), the render must have the sha256 the validate job produced
# (ORION_EXPECT_MANIFEST_SHA256, when set), then apply (monitoring stack + overlay),
# rollouts and the same smoke test as kind, through port-forward.
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
  orion_log "EKS deploy skipped: ${missing[*]} not configured (nothing was deployed to EKS)"
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
  if [ "$rc" -ne 0 ]; then orion_result eks "FAILED during $phase on $EKS_CLUSTER_NAME ($AWS_REGION)"; fi
}
trap on_exit EXIT

out="${ORION_OUT_DIR:-$ORION_ROOT/.tmp/deploy}"
manifest="$out/$env.eks.yaml"
sha="$(orion_render "$env" "$manifest" "$api" "$worker")"
if [ -n "${ORION_EXPECT_MANIFEST_SHA256:-}" ] && [ "$sha" != "$ORION_EXPECT_MANIFEST_SHA256" ]; then
  orion_die "render $sha differs from the validated one $ORION_EXPECT_MANIFEST_SHA256"
fi
orion_render_monitoring "$out/monitoring.eks.yaml"

phase=kubeconfig
KUBECONFIG="$(mktemp)"
export KUBECONFIG
aws eks update-kubeconfig --name "$EKS_CLUSTER_NAME" --region "$AWS_REGION" --kubeconfig "$KUBECONFIG" >/dev/null

phase=apply
"$KUBECTL" apply -f "$out/monitoring.eks.yaml"
"$KUBECTL" apply -f "$manifest"

phase=rollout
if ! orion_rollout "$ns" api worker || ! orion_rollout monitoring prometheus grafana; then
  orion_diagnostics "$ns" monitoring
  exit 1
fi

phase=smoke
ORION_RESULTS="${ORION_RESULTS:-$(mktemp)}"
orion_smoke "$ns"
orion_result eks "deployed to $EKS_CLUSTER_NAME ($AWS_REGION), namespace $ns, manifest sha256 ${sha:0:12}…, rollouts and smoke ok"
