#!/usr/bin/env bash
# ci-build-image.sh SERVICE   (SERVICE: api | worker)
#
# CI's image push: the index `make release-images` built (scripts/release-images.sh, the
# same script and flags here, in CI and for anyone rebuilding a release) from dist/oci/orion-
# SERVICE goes to the registry unchanged: first by digest, then under each tag, every copy
# with --preserve-digests, so the digest pushed is the digest built (and rebuilt by users).
# Nothing is built here: the build is the release build, done before this script.
#
# Environment:
#   TAGS       space-separated full references (ghcr.io/orionlynn19/orion-api:dev ...); required
#   PUSH       true: push and print digest=sha256:... and image=<repository>@sha256:...
#              (also to $GITHUB_OUTPUT); false (pull requests): check the layout, push nothing
#   OCI_DIR    default: $ROOT/dist/oci
#   ATTEMPTS   tries of each copy (default 3, see ci-retry.sh): a registry hiccup costs a
#              retry, not a red pipeline
#   DRY_RUN=1  print the commands instead of running them
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
service="${1:-}"
case "$service" in
  api|worker) ;;
  *) echo "usage: ci-build-image.sh api|worker" >&2; exit 2 ;;
esac
[ -n "${TAGS:-}" ] || { echo "ci-build-image: TAGS is empty" >&2; exit 2; }
push="${PUSH:-false}"
case "$push" in true|false) ;; *) echo "ci-build-image: PUSH must be true or false, not '$push'" >&2; exit 2 ;; esac
layout="${OCI_DIR:-$ROOT/dist/oci}/orion-$service"
[ -f "$layout/index.json" ] || { echo "ci-build-image: $layout is missing (run: make release-images)" >&2; exit 1; }

# The index and what it says, checked before anything leaves the machine: two platforms,
# each layer's binary of its own architecture (ELF e_machine read from the layer).
digest="$(python3 "$ROOT/scripts/release-oci.py" digest "$layout" --ref latest)"
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "ci-build-image: no index digest in $layout" >&2; exit 1; }
elf="$(python3 "$ROOT/scripts/release-oci.py" layer-elf "$layout" --ref latest)"
[ "$elf" = "$(printf 'linux/amd64 orion 62\nlinux/arm64 orion 183')" ] || {
  echo "ci-build-image: $layout does not hold one amd64 and one arm64 binary:" >&2; echo "$elf" >&2; exit 1; }
first="${TAGS%% *}"
repo="${first%:*}"
for tag in $TAGS; do
  [ "${tag%:*}" = "$repo" ] || { echo "ci-build-image: TAGS mixes repositories ($repo, ${tag%:*})" >&2; exit 2; }
done
echo "ci-build-image: orion-$service $digest"

copy() {  # copy DEST: the whole index, digests preserved; the registry's digest must be ours
  local dest="$1" got
  local cmd=(skopeo copy --quiet --all --preserve-digests --digestfile "$tmp/digest" "oci:$layout:latest" "$dest")
  if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "${cmd[@]}"; echo; return 0; fi
  "$ROOT/scripts/ci-retry.sh" "${ATTEMPTS:-3}" "${cmd[@]}"
  got="$(cat "$tmp/digest")"
  [ "$got" = "$digest" ] || { echo "ci-build-image: $dest is $got, not the built $digest" >&2; exit 1; }
}

if [ "$push" = true ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  copy "docker://$repo@$digest"
  for tag in $TAGS; do copy "docker://$tag"; done
  out="$(printf 'digest=%s\nimage=%s@%s\n' "$digest" "$repo" "$digest")"
  echo "$out"
  if [ -n "${GITHUB_OUTPUT:-}" ]; then echo "$out" >>"$GITHUB_OUTPUT"; fi
fi
