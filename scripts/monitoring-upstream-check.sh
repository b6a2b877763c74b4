#!/usr/bin/env bash
# monitoring-upstream-check.sh [RULE_TEST...]: the monitoring configuration checked by the
# promtool and amtool of the exact images compose and k8s ship (docker-compose.yml's image
# lines, which k8s/render-monitoring.sh also uses), each file mounted where that image reads it:
#
#   promtool check config   compose's prometheus.yml + rules (/etc/prometheus/...), and k8s's
#                           (/etc/prometheus/config/prometheus.yml, rules in /etc/prometheus/rules/)
#   promtool test rules     RULE_TEST... (names in monitoring/; default: alerts*.test.yaml)
#   amtool check-config     monitoring/alertmanager.yml (/etc/alertmanager/alertmanager.yml)
#
# The tests and `make lint-monitoring` run Debian's promtool 2.42 and amtool 0.25 on every
# machine; this adds the versions users get. An image that is neither present nor pullable (no
# registry: this project's machines) is reported, once, as NOT RUN, and the exit status is 0;
# under GITHUB_ACTIONS=true (GitHub's runner, which can pull) it is a failure.
#
# Environment: MONITORING_PROMETHEUS_IMAGE / MONITORING_ALERTMANAGER_IMAGE replace the images
# (the tests: stand-ins with the upstream layout), DOCKER (default docker).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
docker="${DOCKER:-docker}"
log() { printf 'monitoring-upstream: %s\n' "$*"; }

compose_image() {
  local image
  image="$(sed -nE "s#^ +image: +($1:[^ @]+) *\$#\\1#p" "$ROOT/docker-compose.yml")"
  [ "$(printf '%s\n' "$image" | grep -c .)" = 1 ] || { echo "monitoring-upstream: no single $1 image in docker-compose.yml" >&2; exit 1; }
  printf '%s\n' "$image"
}
prom="${MONITORING_PROMETHEUS_IMAGE:-$(compose_image prom/prometheus)}"
am="${MONITORING_ALERTMANAGER_IMAGE:-$(compose_image prom/alertmanager)}"
if [ $# -eq 0 ]; then
  set -- "$ROOT"/monitoring/alerts*.test.yaml
  set -- "${@#"$ROOT/monitoring/"}"
fi

available() {
  "$docker" image inspect "$1" >/dev/null 2>&1 && return 0
  "$docker" pull --quiet "$1" >/dev/null 2>&1
}
missing=()
for image in "$prom" "$am"; do available "$image" || missing+=("$image"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${GITHUB_ACTIONS:-}" = true ]; then
    echo "monitoring-upstream: FAILED: cannot pull ${missing[*]} (GitHub's runner should)" >&2; exit 1
  fi
  log "NOT RUN: ${missing[*]} cannot be pulled here; Debian's promtool $(promtool --version 2>&1 | sed -nE 's/^promtool, version ([^ ]+).*/\1/p') and amtool $(amtool --version 2>&1 | sed -nE 's/^amtool, version ([^ ]+).*/\1/p') checked the same files (CI's GitHub runner runs these)"
  exit 0
fi

m="$ROOT/monitoring"
# promtool test rules keeps its TSDB in a temporary directory: a writable /tmp in a read-only root.
run=("$docker" run --rm --network none --read-only --tmpfs /tmp --user "$(id -u):$(id -g)")
promtool=("${run[@]}" --entrypoint /bin/promtool)
version="$("${promtool[@]}" "$prom" --version 2>&1 | sed -nE 's/^promtool, version ([^ ]+).*/\1/p')"

"${promtool[@]}" -v "$m/prometheus.yml:/etc/prometheus/prometheus.yml:ro" \
  -v "$m/alerts.yaml:/etc/prometheus/alerts.yaml:ro" -v "$m/slo.yaml:/etc/prometheus/slo.yaml:ro" \
  "$prom" check config /etc/prometheus/prometheus.yml
log "promtool ${version:-?} of $prom: check config of compose's prometheus.yml and rules passed"
"${promtool[@]}" -v "$m:/monitoring:ro" -w /monitoring "$prom" test rules "$@"
log "promtool ${version:-?} of $prom: test rules ($*) passed"
"${run[@]}" --entrypoint /bin/amtool -v "$m/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro" \
  -v "$m/alertmanager-secrets:/etc/alertmanager/secrets:ro" "$am" check-config /etc/alertmanager/alertmanager.yml
log "amtool of $am: check-config monitoring/alertmanager.yml passed"
# Last: k8s's config uses kubernetes_sd_configs, which upstream's build has and Debian's does not.
"${promtool[@]}" -v "$ROOT/k8s/monitoring/prometheus/prometheus.yml:/etc/prometheus/config/prometheus.yml:ro" \
  -v "$m/alerts.yaml:/etc/prometheus/rules/alerts.yaml:ro" -v "$m/slo.yaml:/etc/prometheus/rules/slo.yaml:ro" \
  "$prom" check config /etc/prometheus/config/prometheus.yml
log "promtool ${version:-?} of $prom: check config of k8s's prometheus.yml and rules passed"
