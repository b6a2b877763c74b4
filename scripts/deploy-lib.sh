# shellcheck shell=bash
# Functions shared by scripts/deploy-kind.sh and scripts/deploy-eks.sh (sourced, not run).
#
# Split in two on purpose: rendering, digest pinning, the environment mapping and the
# summary need no cluster (tests/ci runs them on every `make test`); the functions that
# talk to a cluster are below the "cluster" line and run in CI's deploy job or on a
# developer's kind cluster.
#
# Inputs (environment):
#   ORION_K8S_DIR      kustomize tree to render (default: <repo>/k8s)
#   ORION_REGISTRY     registry namespace of the images (default: ghcr.io/orionlynn19)
#   ORION_RESULTS      key=value file the steps append to; `summary` turns it into Markdown
#   PYTHON             interpreter with PyYAML (default: python3; `make` puts .venv first)
#   KUBECTL            kubectl binary (default: kubectl; `make` puts the pinned .venv one first)

ORION_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORION_K8S_DIR="${ORION_K8S_DIR:-$ORION_ROOT/k8s}"
if [ -d "$ORION_K8S_DIR" ]; then ORION_K8S_DIR="$(cd "$ORION_K8S_DIR" && pwd)"; fi
ORION_REGISTRY="${ORION_REGISTRY:-ghcr.io/orionlynn19}"
PYTHON="${PYTHON:-python3}"
KUBECTL="${KUBECTL:-kubectl}"

orion_log() { printf '%s: %s\n' "${ORION_LOG_PREFIX:-deploy}" "$*" >&2; }
orion_die() { orion_log "ERROR: $*"; exit 1; }

orion_tool() { "$PYTHON" "$ORION_ROOT/scripts/deploy-tool.py" "$@"; }

# orion_result KEY VALUE: record one line of what happened (last value of a key wins).
orion_result() {
  [ -n "${ORION_RESULTS:-}" ] || return 0
  mkdir -p "$(dirname "$ORION_RESULTS")"
  printf '%s=%s\n' "$1" "$2" >>"$ORION_RESULTS"
}

# orion_env_get ENV KEY: one field of the mapping (namespace, tag, ...) for an environment
# name (dev, uat, prod). Reads the same data file as CI (k8s/environments.yaml).
orion_env_get() {
  local env="$1" key="$2" line
  while IFS= read -r line; do
    case "$line" in "$key="*) printf '%s\n' "${line#*=}"; return 0 ;; esac
  done < <(orion_tool env-info --environments "$ORION_K8S_DIR/environments.yaml" \
             --registry "$ORION_REGISTRY" "$env")
  orion_die "unknown environment '$env' or no '$key' for it in $ORION_K8S_DIR/environments.yaml"
}

# orion_render ENV OUT [API_REF] [WORKER_REF]
# Renders k8s/overlays/ENV into OUT. A non-empty *_REF is pinned into a temporary copy of
# the tree (never the checked-in overlay) the way `kustomize edit set image` does, e.g.
#   orion-api=ghcr.io/orionlynn19/orion-api@sha256:<digest>
# The render is then checked: Deployments api and worker exist in the environment's
# namespace and run exactly the pinned image (or, unpinned, the environment's registry tag,
# which proves the overlay and the CI mapping agree). Prints the render's sha256.
orion_render() {
  local env="$1" out="$2" api="${3:-}" worker="${4:-}"
  local ns tag tmp overlay
  ns="$(orion_env_get "$env" namespace)"
  tag="$(orion_env_get "$env" tag)"
  tmp="$(mktemp -d)"
  # The copy keeps k8s/ and monitoring/ side by side, as in the repo, so relative
  # references between them (alert rules, dashboards) resolve the same way.
  cp -R "$ORION_K8S_DIR" "$tmp/k8s"
  if [ -d "$ORION_ROOT/monitoring" ]; then cp -R "$ORION_ROOT/monitoring" "$tmp/monitoring"; fi
  overlay="$tmp/k8s/overlays/$env"
  if [ ! -f "$overlay/kustomization.yaml" ]; then
    rm -rf "$tmp"
    orion_die "no overlay k8s/overlays/$env"
  fi
  local pins=()
  [ -z "$api" ] || pins+=("orion-api=$api")
  [ -z "$worker" ] || pins+=("orion-worker=$worker")
  if [ ${#pins[@]} -gt 0 ] && ! orion_tool set-image "$overlay/kustomization.yaml" "${pins[@]}"; then
    rm -rf "$tmp"
    orion_die "could not pin ${pins[*]}"
  fi
  mkdir -p "$(dirname "$out")"
  if ! "$KUBECTL" kustomize "$overlay" >"$out"; then
    rm -rf "$tmp"
    orion_die "kustomize could not render k8s/overlays/$env"
  fi
  rm -rf "$tmp"
  if ! orion_tool check "$out" --namespace "$ns" \
      --image "api=${api:-$ORION_REGISTRY/orion-api:$tag}" \
      --image "worker=${worker:-$ORION_REGISTRY/orion-worker:$tag}"; then
    orion_die "the render of k8s/overlays/$env is not what the deploy expects (see above)"
  fi
  orion_sha256 "$out"
}

orion_sha256() { sha256sum "$1" | cut -d' ' -f1; }

# orion_render_monitoring OUT [TARGET]: the monitoring stack (namespace monitoring) through the
# k8s area's own renderer (it owns the load-restrictor flag and the Grafana admin Secret;
# GRAFANA_ADMIN_PASSWORD, when set, replaces the committed local one). TARGET: local (kind,
# the default) or the environment of a real cluster, for which the renderer refuses to run
# without GRAFANA_ADMIN_PASSWORD (its one line says why; nothing is written to OUT).
orion_render_monitoring() {
  local out="$1" target="${2:-local}"
  [ -x "$ORION_K8S_DIR/render-monitoring.sh" ] || orion_die "no executable k8s/render-monitoring.sh"
  if ! KUBECTL="$KUBECTL" "$ORION_K8S_DIR/render-monitoring.sh" "$target" >"$out"; then
    rm -f "$out"
    orion_die "could not render k8s/monitoring for $target (see above); nothing applied"
  fi
}

# orion_kind_ref REF: the name under which an image is loaded into kind. A digest reference
# cannot be loaded as such: the registry digest names the multi-platform index, and what
# reaches the node is one platform's image from a `docker save --platform` archive (see
# load_images in deploy-kind.sh), whose index digest differs, so the node would never match
# the digest and would pull from the registry. A pulled digest is therefore loaded under a
# tag derived from it: <repo>:kind-<12 hex>. The tag exists in no registry, so if loading had
# failed the pod fails to pull, loudly.
orion_kind_ref() {
  local ref="$1"
  case "$ref" in
    *@sha256:*)
      local name="${ref%@*}" hex="${ref##*@sha256:}"
      # drop a tag (name:tag@digest); a ':' before the last '/' is a registry port
      case "${name##*/}" in *:*) name="${name%:*}" ;; esac
      printf '%s:kind-%s\n' "$name" "${hex:0:12}"
      ;;
    *) printf '%s\n' "$ref" ;;
  esac
}

# orion_only_images_differ VALIDATED OTHER REF OTHER_REF [REF OTHER_REF...]: true when OTHER,
# with each OTHER_REF written back as REF, is byte for byte VALIDATED. Proves the kind
# render runs exactly the validated manifests except for the image names kind knows.
orion_only_images_differ() {
  local validated="$1" other="$2" sed_args=()
  shift 2
  while [ $# -ge 2 ]; do
    sed_args+=(-e "s|$2|$1|g")
    shift 2
  done
  sed "${sed_args[@]}" "$other" | cmp -s - "$validated"
}

# orion_summary RESULTS: Markdown to stdout and, in GitHub Actions, to the job summary.
orion_summary() {
  local results="$1" md
  md="$(orion_tool summary "$results")" || orion_die "could not write the summary"
  printf '%s\n' "$md"
  if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then printf '%s\n' "$md" >>"$GITHUB_STEP_SUMMARY"; fi
}

# ---------------------------------------------------------------- cluster ---------------

# orion_use_cluster_kubectl: once the context points at the cluster, KUBECTL becomes a kubectl
# within one minor of its API server (kubectl's supported skew): the pinned .venv one when it
# is, else the server minor's pinned kubectl (scripts/deploy-kubectl.py, tools/kubectl-versions.yaml).
# Renders (`kubectl kustomize`) stay on the .venv one: no server, and its kustomize made them.
orion_use_cluster_kubectl() {
  local chosen
  chosen="$("$PYTHON" "$ORION_ROOT/scripts/deploy-kubectl.py" ensure --kubectl "$KUBECTL")" ||
    orion_die "no kubectl within one minor of the cluster's API server (above)"
  KUBECTL="$chosen"
}

# orion_http_check URL [MUST_CONTAIN]: 200 (and the text) or fail; prints the status code.
orion_http_check() {
  local url="$1" want="${2:-}" body code
  body="$(mktemp)"
  code="$(curl -sS -o "$body" -w '%{http_code}' --max-time 5 "$url" 2>/dev/null)" || code="000"
  if [ "$code" != "200" ]; then rm -f "$body"; echo "$code"; return 1; fi
  if [ -n "$want" ] && ! grep -q "$want" "$body"; then rm -f "$body"; echo "200-without-$want"; return 1; fi
  rm -f "$body"
  echo "$code"
}

# orion_port_forward NS TARGET LOCAL:REMOTE: starts kubectl port-forward in the background,
# waits until the local port answers, prints its pid.
orion_port_forward() {
  local ns="$1" target="$2" ports="$3" pid _
  "$KUBECTL" -n "$ns" port-forward "$target" "$ports" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${ports%%:*}/health"; then echo "$pid"; return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  # The forward never came up; it may already have exited, so a failing kill is expected.
  if kill "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null; fi
  return 1
}

# orion_smoke NS: /health, /ready and /metrics of both services through port-forward.
orion_smoke() {
  # orion_build_info is set at start by both services: /metrics must be theirs, not a 200 from anything.
  local ns="$1" svc target local_port remote marker=orion_build_info pid path code line svc_ok ok=0
  for svc in api worker; do
    case "$svc" in
      api) target=svc/api local_port="${API_LOCAL_PORT:-18000}" remote=80 ;;
      worker) target=deploy/worker local_port="${WORKER_LOCAL_PORT:-19091}" remote=9091 ;;
    esac
    if ! pid="$(orion_port_forward "$ns" "$target" "$local_port:$remote")"; then
      orion_result "smoke_$svc" "FAILED: port-forward to $target did not come up"
      ok=1
      continue
    fi
    line="" svc_ok=0
    for path in /health /ready /metrics; do
      local want=""
      [ "$path" = /metrics ] && want="$marker"
      code="$(orion_http_check "http://127.0.0.1:$local_port$path" "$want")" || svc_ok=1
      line="$line $path $code,"
    done
    # Stop our own port-forward; its exit status after the kill says nothing about the smoke.
    if kill "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null; fi
    if [ "$svc_ok" = 0 ]; then
      orion_result "smoke_$svc" "ok (${line# })"
    else
      orion_result "smoke_$svc" "FAILED (${line# })"
      ok=1
    fi
    orion_log "smoke $svc:${line%,}"
  done
  return "$ok"
}

# A failed rollout is undone, never left half-done (the worker is Recreate: a failed rollout
# would leave the environment without a worker). Before the apply, orion_remember_revisions
# notes the revision each Deployment is at; when any rollout then fails, orion_rollout puts
# every noted Deployment back to that revision and waits for it, and the caller prints the
# diagnostics and fails. Each Deployment's progressDeadlineSeconds (k8s/) is shorter than
# ROLLOUT_TIMEOUT, so a stuck rollout reports `deployment "x" exceeded its progress deadline`
# within the wait, and no Deployment is still "progressing" after the job gave up.
#
# kubectl's behaviours relied on (kubernetes/kubectl, pkg/cmd/rollout, pkg/polymorphichelpers):
#   rollout status: exit 0 and `deployment "x" successfully rolled out`; exit 1 with `error:
#     deployment "x" exceeded its progress deadline` (Progressing=False, ProgressDeadlineExceeded)
#     or `error: timed out waiting for the condition` at --timeout.
#   rollout undo --to-revision=N: `deployment.apps/x rolled back`; `deployment.apps/x skipped
#     rollback (current template already matches revision N)` when this deploy did not change
#     its pod template (so undoing an unchanged Deployment is harmless); exit 1 with `error:
#     unable to find specified revision N in history` or `error: failed restoring revision N:
#     ...` (e.g. the API refused the patch).
#   get --ignore-not-found: exit 0 and no output for an object that does not exist.
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-180s}"
ORION_BEFORE=()

# orion_remember_revisions NS DEPLOYMENT...: before the apply, the revision each Deployment is
# at (annotation deployment.kubernetes.io/revision; empty: it does not exist yet).
orion_remember_revisions() {
  local ns="$1" d rev
  shift
  for d in "$@"; do
    if ! rev="$("$KUBECTL" -n "$ns" get deployment "$d" --ignore-not-found \
                 -o 'jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}')"; then
      orion_die "cannot read the revision of deployment $ns/$d before applying (nothing applied)"
    fi
    ORION_BEFORE+=("$ns/$d=$rev")
  done
}

# orion_rollout NS DEPLOYMENT...: wait for each rollout; on the first failure undo every
# Deployment noted by orion_remember_revisions (orion_undo) and return 1.
orion_rollout() {
  local ns="$1" d
  shift
  for d in "$@"; do
    if ! "$KUBECTL" -n "$ns" rollout status "deployment/$d" --timeout="$ROLLOUT_TIMEOUT"; then
      orion_log "rollout of deployment $ns/$d failed: undoing this deploy's Deployments"
      orion_undo || true
      return 1
    fi
  done
}

# orion_undo: every noted Deployment back to its revision from before the apply, each undo
# waited for. Records one line (key ORION_ROLLBACK_KEY, default rollback) saying what became
# of each; returns 1 when any could not be put back.
orion_undo() {
  local entry ns d rev out ok=0 what=()
  for entry in ${ORION_BEFORE[@]+"${ORION_BEFORE[@]}"}; do
    ns="${entry%%/*}" d="${entry#*/}" d="${d%%=*}" rev="${entry#*=}"
    if [ -z "$rev" ]; then
      orion_log "undo $ns/$d: created by this deploy, no earlier revision to go back to; left as applied"
      what+=("$ns/$d new, left as applied")
      continue
    fi
    if ! out="$("$KUBECTL" -n "$ns" rollout undo "deployment/$d" --to-revision="$rev" 2>&1)"; then
      orion_log "undo $ns/$d to revision $rev FAILED: $out"
      what+=("$ns/$d undo to revision $rev FAILED (${out##*$'\n'})")
      ok=1
      continue
    fi
    orion_log "undo $ns/$d: $out"
    case "$out" in
      *"skipped rollback"*) what+=("$ns/$d unchanged by this deploy"); continue ;;
    esac
    if "$KUBECTL" -n "$ns" rollout status "deployment/$d" --timeout="$ROLLOUT_TIMEOUT"; then
      what+=("$ns/$d back at revision $rev")
    else
      orion_log "undo $ns/$d: revision $rev did not finish rolling out either"
      what+=("$ns/$d undone to revision $rev but that rollout did not finish")
      ok=1
    fi
  done
  local IFS=';'
  if [ "$ok" = 0 ]; then
    orion_result "${ORION_ROLLBACK_KEY:-rollback}" "done:${what[*]/#/ }"
  else
    orion_result "${ORION_ROLLBACK_KEY:-rollback}" "INCOMPLETE:${what[*]/#/ }"
  fi
  return "$ok"
}

# orion_diagnostics NS...: what an operator would look at first when a rollout fails.
# Runs after a failure that is already reported; each command is best effort and says so.
orion_diagnostics() {
  local ns cmd
  for ns in "$@"; do
    orion_log "---- diagnostics for namespace $ns"
    for cmd in "get deploy,rs,pods -o wide" "get events --sort-by=.lastTimestamp" "describe pods" \
               "logs --all-containers --prefix --tail=50 -l app.kubernetes.io/part-of=orion"; do
      # shellcheck disable=SC2086 # cmd is a list of kubectl arguments
      if ! "$KUBECTL" -n "$ns" $cmd >&2; then orion_log "(kubectl $cmd failed)"; fi
    done
  done
}
