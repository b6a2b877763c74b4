#!/usr/bin/env bash
# release-verify.sh IMAGE: rebuild a released image from its commit and compare digests.
#
#   IMAGE  ghcr.io/orionlynn19/orion-api@sha256:...   (a registry, by digest: what users run)
#          docker://REF                                (any reference skopeo understands)
#          oci:PATH[:REF]                              (an OCI layout, e.g. standing in for the
#                                                      registry where none can be reached)
#
# 1. skopeo copies the whole index (every platform, digests preserved) into a local layout;
#    for a digest reference the copy's index digest must be the one asked for.
# 2. The image's org.opencontainers.image.revision label names the commit and its title the
#    service; this repository must have that commit (git fetch first).
# 3. A clean clone at that commit runs `make build release-images` (the release build).
# 4. The rebuilt index digest must equal the image's; otherwise the first differing blob is
#    named and the exit status is 1.
#
# Environment: VERIFY_DIR (work directory, default $ROOT/.tmp/verify-release), VERIFY_CLONE
# (an existing clean clone of that commit to rebuild in instead of a new one; its cargo target
# dir then makes the binary build incremental), VENV (tools venv, default $ROOT/.venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${1:-}"
[ -n "$image" ] || { echo "usage: release-verify.sh IMAGE (e.g. ghcr.io/orionlynn19/orion-api@sha256:...)" >&2; exit 2; }
work="${VERIFY_DIR:-$ROOT/.tmp/verify-release}"
venv="${VENV:-$ROOT/.venv}"
oci="$ROOT/scripts/release-oci.py"

want=""
case "$image" in
  oci:*) src="$image" ;;
  docker://*) src="$image" ;;
  *) src="docker://$image" ;;
esac
case "$src" in
  docker://*@sha256:*) want="sha256:${src##*@sha256:}" ;;
esac
if [ -n "$want" ] && ! [[ "$want" =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "release-verify: IMAGE=$image: the digest is not sha256:<64 hex>" >&2; exit 2
fi

rm -rf "$work/image"
mkdir -p "$work"
echo "release-verify: fetching $src"
skopeo copy --quiet --all --preserve-digests "$src" "oci:$work/image:latest" >/dev/null
got="$(python3 "$oci" digest "$work/image" --ref latest)"
if [ -n "$want" ] && [ "$got" != "$want" ]; then
  echo "release-verify: FAILED: asked for $want, the copy's index is $got" >&2; exit 1
fi
revision="$(python3 "$oci" label "$work/image" org.opencontainers.image.revision --ref latest)"
title="$(python3 "$oci" label "$work/image" org.opencontainers.image.title --ref latest)"
case "$title" in
  orion-api|orion-worker) ;;
  *) echo "release-verify: FAILED: the image's title label is '$title', not orion-api or orion-worker" >&2; exit 1 ;;
esac
[[ "$revision" =~ ^[0-9a-f]{40}$ ]] || { echo "release-verify: FAILED: revision label '$revision' is not a commit id" >&2; exit 1; }
git -C "$ROOT" cat-file -e "$revision^{commit}" 2>/dev/null || {
  echo "release-verify: FAILED: commit $revision (the image's revision label) is not in $ROOT: git fetch it first" >&2; exit 1; }
echo "release-verify: $title $got was built from $revision"

clone="${VERIFY_CLONE:-}"
if [ -n "$clone" ]; then
  [ "$(git -C "$clone" rev-parse HEAD)" = "$revision" ] || { echo "release-verify: VERIFY_CLONE=$clone is not at $revision" >&2; exit 2; }
  [ -z "$(git -C "$clone" status --porcelain --untracked-files=no)" ] || { echo "release-verify: VERIFY_CLONE=$clone has changes" >&2; exit 2; }
else
  clone="$work/src/orion"
  rm -rf "$work/src"
  mkdir -p "$work/src"
  git clone --quiet --no-local --no-checkout "$ROOT" "$clone"
  git -C "$clone" checkout --quiet --detach "$revision"
  ln -s "$venv" "$clone/.venv"
fi
grep -q '^release-images:' "$clone/mk/release.mk" 2>/dev/null || {
  echo "release-verify: FAILED: commit $revision has no \`make release-images\` (released before reproducible builds)" >&2; exit 1; }
echo "release-verify: rebuilding in $clone"
(cd "$clone" && env -u CARGO_TARGET_DIR make --no-print-directory -o "$clone/.venv/.installed" build release-images \
  >"$work/rebuild.log" 2>&1) || { echo "release-verify: FAILED: the rebuild failed; see $work/rebuild.log" >&2; tail -n 20 "$work/rebuild.log" >&2; exit 1; }

if out="$(python3 "$oci" compare "$work/image" "$clone/dist/oci/$title" --ref latest)"; then
  echo "release-verify: OK: $title rebuilt from $revision is $got, the same digest"
else
  echo "$out" >&2
  echo "release-verify: FAILED: $title rebuilt from $revision is not $got (A = the image, B = the rebuild)" >&2
  exit 1
fi
