#!/usr/bin/env bash
# Deploy Orion to a kind cluster: the deploy CI runs, runnable on a laptop.
#
#   make images && make deploy-kind ENV=dev      # local images orion-api:local, orion-worker:local
#   scripts/deploy-kind.sh up uat                # the same, uat overlay
#
# CI (.github/workflows/ci.yml, job deploy) calls it with the pushed images pinned by digest:
#   ORION_API_IMAGE=ghcr.io/orionlynn19/orion-api@sha256:...  ORION_WORKER_IMAGE=...@sha256:...
#
# Commands (the first four need no cluster and are tested by tests/ci):
#   env ENV            the environment's mapping: branch, image tag, namespace, overlay
#   ci-env             what this CI run builds/pushes/deploys (GitHub's default variables in,
#                      key=value lines out, also appended to $GITHUB_OUTPUT when set)
#   render ENV OUT     render k8s/overlays/ENV into OUT with ORION_*_IMAGE pinned (if set) on
#                      a temporary copy; prints the render's sha256
#   summary RESULTS    Markdown deployment summary (also to $GITHUB_STEP_SUMMARY when set)
#   up [ENV]           render, create or reuse the kind cluster (pinned node image), load the
#                      images (one single-platform archive), apply the overlay and the monitoring stack, wait for the
#                      rollouts (a failed one undoes every Deployment of this deploy, then the
#                      diagnostics), smoke-test /health /ready /metrics through port-forward,
#                      print the summary. ENV defaults to dev.
#   smoke ENV          only the smoke test, against whatever runs in the current context
#   down               delete the kind cluster
#
# Environment: ORION_API_IMAGE, ORION_WORKER_IMAGE (default orion-{api,worker}:$TAG, TAG=local),
# KIND_CLUSTER (orion), KIND_NODE_IMAGE (pinned below), KIND_PLATFORM (linux/<this machine's
# arch>: the platform pulled, saved and loaded), ROLLOUT_TIMEOUT (180s),
# ORION_EXPECT_MANIFEST_SHA256 (CI: the sha the validate job rendered; a different render
# stops the deploy), ORION_RESULTS (results file), ORION_OUT_DIR (rendered manifests, .tmp/deploy).
set -euo pipefail

# shellcheck source=scripts/deploy-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/deploy-lib.sh"
ORION_LOG_PREFIX=deploy-kind

# kind v0.30.0's node image for Kubernetes 1.34, by digest (kind's release notes list it):
# a tag alone could be re-pushed, a digest cannot.
KIND_VERSION_EXPECTED="v0.30.0"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a}"
KIND_CLUSTER="${KIND_CLUSTER:-orion}"
ORION_OUT_DIR="${ORION_OUT_DIR:-$ORION_ROOT/.tmp/deploy}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

cmd_ci_env() {
  local out
  out="$(orion_tool ci-env --environments "$ORION_K8S_DIR/environments.yaml" --registry "$ORION_REGISTRY")"
  printf '%s\n' "$out"
  if [ -n "${GITHUB_OUTPUT:-}" ]; then printf '%s\n' "$out" >>"$GITHUB_OUTPUT"; fi
}

cmd_render() {
  [ $# -eq 2 ] || orion_die "usage: render ENV OUT"
  orion_render "$1" "$2" "${ORION_API_IMAGE:-}" "${ORION_WORKER_IMAGE:-}"
}

# The node's platform: kind runs its nodes on this machine's docker engine.
node_platform() {
  if [ -n "${KIND_PLATFORM:-}" ]; then printf '%s\n' "$KIND_PLATFORM"; return; fi
  case "$(uname -m)" in
    x86_64|amd64) echo linux/amd64 ;;
    aarch64|arm64) echo linux/arm64 ;;
    *) orion_die "unknown machine $(uname -m): set KIND_PLATFORM=linux/<arch>" ;;
  esac
}

# Make REF available to `kind load` and print the reference the node will know it by.
# A digest is pulled for the node's platform only (`--platform`), then tagged for kind.
prepare_image() {
  local ref="$1" platform="$2" kind_ref
  kind_ref="$(orion_kind_ref "$ref")"
  if [ "$kind_ref" != "$ref" ]; then
    "$ORION_ROOT/scripts/ci-retry.sh" 3 docker pull --quiet --platform "$platform" "$ref" >&2
    docker tag "$ref" "$kind_ref"
  elif ! docker image inspect "$ref" >/dev/null 2>&1; then
    orion_die "image $ref is not in the local docker engine (build it first: make images)"
  fi
  printf '%s\n' "$kind_ref"
}

# load_images CLUSTER PLATFORM REF...: one single-platform archive, imported into the nodes.
# Not `kind load docker-image`: with Docker's containerd image store (the default of fresh
# Docker 29 installs, e.g. ubuntu-latest since 26.04) that saves the whole multi-platform
# index, attestations included, of which only one platform's blobs were pulled, and the
# node's `ctr import --all-platforms` fails with "content digest ... not found" (kind#3795,
# kind PR #4247). `docker save --platform` writes only what is there; see save_platform_args
# for the engines that lack it.
load_images() {
  local cluster="$1" platform="$2" archive args
  shift 2
  archive="$ORION_OUT_DIR/kind-images.tar"
  mkdir -p "$ORION_OUT_DIR"
  args="$(save_platform_args "$platform")"
  # shellcheck disable=SC2086 # args is empty or "--platform <os/arch>"
  if ! docker save $args --output "$archive" "$@"; then
    orion_die "docker save ${args:+$args }failed (engine:" \
      "$(docker version --format '{{.Server.Version}}, API {{.Server.APIVersion}}' 2>/dev/null || echo unknown))"
  fi
  kind load image-archive --name "$cluster" "$archive"
  rm -f "$archive"
}

# save_platform_args PLATFORM: "--platform PLATFORM" when the CLI and the engine agree on API
# 1.48 or newer (Docker >= 28: docker/cli cli/command/image/save.go gives the flag
# `"version": "1.48"`, and below that the CLI refuses it: "--platform" requires API version
# 1.48, but the Docker daemon API version is 1.41). Below 1.48 nothing: the classic image
# store (the only one by default before Docker 29) holds one platform per image, so a plain
# `docker save` already is the single-platform archive kind needs. Only the containerd store,
# opt-in on those engines, can hold a partial index that no plain save can write (the images
# `make images` loads are single-platform and load fine); that case is said, not guessed at.
save_platform_args() {
  local platform="$1" api major minor
  api="$(docker version --format '{{.Client.APIVersion}}' 2>/dev/null || true)"
  major="${api%%.*}" minor="${api#*.}"
  if [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] && { [ "$major" -gt 1 ] || [ "$minor" -ge 48 ]; }; then
    printf -- '--platform %s\n' "$platform"
    return
  fi
  if docker info --format '{{.DriverStatus}}' 2>/dev/null | grep -q 'io.containerd.snapshotter'; then
    orion_log "API ${api:-unknown} (< 1.48) with the containerd image store: a plain docker save of a pulled" \
      "multi-platform image may not import into kind (kind#3795); Docker >= 28 saves one platform"
  fi
}

PHASE=none
on_exit() {
  local rc=$?
  [ "$PHASE" != none ] || return 0
  if [ "$rc" -ne 0 ]; then
    orion_result status "failed during $PHASE"
    if [ "$PHASE" = rollout ] || [ "$PHASE" = smoke ]; then orion_diagnostics "$NS" monitoring; fi
  fi
  orion_tool summary "$ORION_RESULTS"
}

cmd_up() {
  local env="${1:-dev}"
  local api="${ORION_API_IMAGE:-orion-api:${TAG:-local}}" worker="${ORION_WORKER_IMAGE:-orion-worker:${TAG:-local}}"
  NS="$(orion_env_get "$env" namespace)"
  ORION_RESULTS="${ORION_RESULTS:-$(mktemp)}"
  export ORION_RESULTS
  command -v kind >/dev/null || orion_die "kind is not installed (https://kind.sigs.k8s.io, $KIND_VERSION_EXPECTED)"
  command -v docker >/dev/null || orion_die "docker is not installed"
  trap on_exit EXIT

  orion_result env "$env"
  orion_result namespace "$NS"
  orion_result commit "${GITHUB_SHA:-$(git -C "$ORION_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)}"
  orion_result image_api "$api"
  orion_result image_worker "$worker"

  PHASE=render
  local manifest="$ORION_OUT_DIR/$env.yaml" sha
  sha="$(orion_render "$env" "$manifest" "$api" "$worker")"
  orion_result manifest_sha256 "$sha"
  if [ -n "${ORION_EXPECT_MANIFEST_SHA256:-}" ] && [ "$sha" != "$ORION_EXPECT_MANIFEST_SHA256" ]; then
    orion_die "render $sha differs from the validated one ${ORION_EXPECT_MANIFEST_SHA256}"
  fi
  orion_render_monitoring "$ORION_OUT_DIR/monitoring.yaml"

  PHASE=images
  local kind_api kind_worker platform
  platform="$(node_platform)"
  kind_api="$(prepare_image "$api" "$platform")"
  kind_worker="$(prepare_image "$worker" "$platform")"
  orion_result kind_image_api "$kind_api"
  orion_result kind_image_worker "$kind_worker"
  local kind_manifest="$manifest"
  if [ "$kind_api" != "$api" ] || [ "$kind_worker" != "$worker" ]; then
    # Same overlay with the loaded names; it must differ from the validated render in the
    # image references and nowhere else.
    kind_manifest="$ORION_OUT_DIR/$env.kind.yaml"
    orion_render "$env" "$kind_manifest" "$kind_api" "$kind_worker" >/dev/null
    if ! orion_only_images_differ "$manifest" "$kind_manifest" "$api" "$kind_api" "$worker" "$kind_worker"; then
      orion_die "the kind render differs from the validated render in more than the image references"
    fi
  fi
  orion_result render "ok (sha256 ${sha:0:12}…)"

  PHASE=cluster
  if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    orion_result kind_cluster "reused $KIND_CLUSTER"
  else
    kind create cluster --name "$KIND_CLUSTER" --image "$KIND_NODE_IMAGE" --wait 120s
    orion_result kind_cluster "created $KIND_CLUSTER (${KIND_NODE_IMAGE%%@*})"
  fi
  "$KUBECTL" config use-context "kind-$KIND_CLUSTER" >/dev/null
  orion_use_cluster_kubectl

  PHASE=load
  load_images "$KIND_CLUSTER" "$platform" "$kind_api" "$kind_worker"
  orion_result kind_load "ok ($platform archive)"

  PHASE=apply
  # What a failed rollout goes back to (orion_rollout undoes these; deploy-lib.sh).
  orion_remember_revisions "$NS" api worker
  orion_remember_revisions monitoring prometheus alertmanager grafana
  # Namespaced objects need their namespace first; each render starts with its Namespace.
  "$KUBECTL" apply -f "$ORION_OUT_DIR/monitoring.yaml"
  "$KUBECTL" apply -f "$kind_manifest"
  orion_result apply "ok"

  PHASE=rollout
  orion_rollout "$NS" api worker
  orion_rollout monitoring prometheus alertmanager grafana
  orion_result rollout "ok (api, worker in $NS; prometheus, alertmanager, grafana in monitoring)"

  PHASE=smoke
  orion_smoke "$NS"
  orion_result status "succeeded"
}

cmd_smoke() {
  [ $# -eq 1 ] || orion_die "usage: smoke ENV"
  ORION_RESULTS="${ORION_RESULTS:-$(mktemp)}"
  orion_smoke "$(orion_env_get "$1" namespace)"
}

main() {
  local cmd="${1:-}"
  [ $# -eq 0 ] || shift
  case "$cmd" in
    env) [ $# -eq 1 ] || orion_die "usage: env ENV"
         orion_tool env-info --environments "$ORION_K8S_DIR/environments.yaml" --registry "$ORION_REGISTRY" "$1" ;;
    ci-env) cmd_ci_env ;;
    render) cmd_render "$@" ;;
    summary) [ $# -eq 1 ] || orion_die "usage: summary RESULTS"
             orion_summary "$1" ;;
    up) cmd_up "$@" ;;
    smoke) cmd_smoke "$@" ;;
    down) kind delete cluster --name "$KIND_CLUSTER" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
