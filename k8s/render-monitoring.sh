#!/usr/bin/env bash
# Renders the monitoring stack (k8s/monitoring) to stdout. This is the only way it is
# built: `make k8s-render-monitoring`, `make k8s-apply-monitoring`, the deploy scripts and
# tests/k8s all call it.
#
#   k8s/render-monitoring.sh [TARGET]
#
# TARGET is where the render goes: `local` (the default: kind, a laptop, the tests) or an
# environment name (dev, uat, prod) for a real cluster.
#
# Why --load-restrictor LoadRestrictionsNone: the alert rules and the Grafana provisioning
# are monitoring/*, shared with docker compose, i.e. outside the kustomization root.
#
# Rendered through a throw-away overlay in a private temporary directory (removed on exit):
# - the image tags of prom/prometheus, prom/alertmanager and grafana/grafana are
#   docker-compose.yml's (kustomize `images:`): compose is the one place they are written, and
#   Dependabot's docker-compose ecosystem updates them there for both (k8s/monitoring names the
#   images without a tag).
# - GRAFANA_ADMIN_PASSWORD (and optionally GRAFANA_ADMIN_USER) set: the committed local Secret
#   `grafana-admin` (admin/admin) is replaced by one holding these values (the variable docker
#   compose reads). For a real cluster it is required and must not be `admin`: one line on
#   stderr, exit 2, nothing on stdout (so nothing can be applied). Every environment counts,
#   dev included: the monitoring namespace is one per cluster, so a dev deploy without the
#   password would reset the Grafana that uat and prod share with it to admin/admin.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kubectl=${KUBECTL:-kubectl}
flags=(kustomize --load-restrictor LoadRestrictionsNone)
target="${1:-local}"

case "$target" in
  local) ;;
  dev|uat|prod)
    if [ -z "${GRAFANA_ADMIN_PASSWORD:-}" ]; then
      echo "render-monitoring: GRAFANA_ADMIN_PASSWORD is empty: Grafana for $target (a real cluster) would run as admin/admin; set it (the GitHub environment's secret GRAFANA_ADMIN_PASSWORD)" >&2
      exit 2
    elif [ "$GRAFANA_ADMIN_PASSWORD" = admin ]; then
      echo "render-monitoring: GRAFANA_ADMIN_PASSWORD is the default 'admin': not for $target (a real cluster)" >&2
      exit 2
    fi ;;
  *) echo "render-monitoring: unknown target '$target' (local, dev, uat or prod)" >&2; exit 2 ;;
esac

case "${GRAFANA_ADMIN_PASSWORD:-}${GRAFANA_ADMIN_USER:-}" in
  *$'\n'*) echo "render-monitoring: GRAFANA_ADMIN_PASSWORD/USER must be one line" >&2; exit 2 ;;
esac

# Inside the repo's .tmp (git-ignored): kustomize only accepts a relative path to the base.
umask 077
mkdir -p "$root/.tmp"
tmp=$(mktemp -d "$root/.tmp/render-monitoring.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
{
  printf '%s\n' "apiVersion: kustomize.config.k8s.io/v1beta1" "kind: Kustomization" "resources:" \
    "  - ../../k8s/monitoring" "images:"
  for name in prom/prometheus prom/alertmanager grafana/grafana; do
    tag=$(sed -nE "s#^ +image: +$name:([^ @]+) *\$#\\1#p" "$root/docker-compose.yml")
    [ "$(printf '%s\n' "$tag" | grep -c .)" = 1 ] ||
      { echo "render-monitoring: docker-compose.yml has no single 'image: $name:<tag>' line" >&2; exit 1; }
    printf '  - name: %s\n    newTag: "%s"\n' "$name" "$tag"
  done
} >"$tmp/kustomization.yaml"
if [ -n "${GRAFANA_ADMIN_PASSWORD:-}" ]; then
  printf 'admin-user=%s\nadmin-password=%s\n' "${GRAFANA_ADMIN_USER:-admin}" "$GRAFANA_ADMIN_PASSWORD" >"$tmp/grafana-admin.env"
  cat >>"$tmp/kustomization.yaml" <<YAML
secretGenerator:
  - name: grafana-admin
    namespace: monitoring
    behavior: replace
    envs: [grafana-admin.env]
YAML
fi
"$kubectl" "${flags[@]}" "$tmp"
