#!/usr/bin/env bash
# release-container.sh: scripts/release-images.sh in the Debian release it is built with.
#
# The image bytes depend on the buildah that writes them, so every release build uses one:
# Debian 12's buildah (and skopeo), the versions below, the ones `make deps` installs on this
# project's machines. Where the host has another buildah (CI's Ubuntu runner),
# release-images.sh runs itself through this script: the same script, same flags, in a pinned
# Debian 12 container with those exact package versions; the checkout is mounted at its own path, so nothing differs but the
# host. dist/ must already hold the binaries (`make build`, on the host).
#
# Environment: RELEASE_BASE_IMAGE (the pinned Debian image), SOURCE_DATE_EPOCH / VERSION /
# REVISION (default: from the checkout, as release-images.sh computes them), DRY_RUN=1
# (print the docker command instead of running it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base="${RELEASE_BASE_IMAGE:-debian:bookworm-20251229-slim@sha256:d5d3f9c23164ea16f31852f95bd5959aad1c5e854332fe00f7b3a20fcc9f635c}"
buildah_pkg="buildah=1.28.2+ds1-3+deb12u1+b3"
skopeo_pkg="skopeo=1.9.3+ds1-1+b10"

sde="${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct HEAD)}"
revision="${REVISION:-$(git -C "$ROOT" rev-parse HEAD)}"
version="${VERSION:-$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")}"

inner="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
$buildah_pkg $skopeo_pkg python3 >/dev/null && scripts/release-images.sh"
# --privileged: buildah needs mount/chroot inside the container (no RUN step executes anything).
cmd=(docker run --rm --privileged
  -e "SOURCE_DATE_EPOCH=$sde" -e "REVISION=$revision" -e "VERSION=$version" -e RELEASE_NO_CONTAINER=1
  -v "$ROOT:$ROOT" -w "$ROOT" "$base" bash -euo pipefail -c "$inner")
if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
"${cmd[@]}"
