#!/usr/bin/env bash
# release-container.sh: scripts/release-images.sh in the Debian release it is built with.
#
# The image bytes depend on the buildah that writes them, so every release build uses one:
# Debian 12's buildah (and skopeo), the versions below, the ones `make deps` installs on this
# project's machines. Where the host has another buildah (CI's Ubuntu runner),
# release-images.sh runs itself through this script: the same script, same flags, in a pinned
# Debian 12 container with those exact package versions. The checkout is mounted read-only at
# its own path and $OUT read-write at its own path, so nothing differs but the host, and
# nothing but $OUT is written. What the container writes there (as root) is handed to the
# user who ran this (RELEASE_OWNER, `id -u`:`id -g`), as a host build would have left it.
# dist/ must already hold the binaries (`make build`, on the host).
#
# Environment: RELEASE_BASE_IMAGE (the pinned Debian image; where none can be pulled,
# scripts/release-base-debootstrap.sh builds one from Debian's packages), and what
# release-images.sh reads, passed on: SOURCE_DATE_EPOCH / VERSION / REVISION (default: from
# the checkout, as release-images.sh computes them), OUT (default $ROOT/dist/oci), SERVICES
# (default "api worker"). DRY_RUN=1 prints the docker command instead of running it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base="${RELEASE_BASE_IMAGE:-debian:bookworm-20251229-slim@sha256:d5d3f9c23164ea16f31852f95bd5959aad1c5e854332fe00f7b3a20fcc9f635c}"
buildah_pkg="buildah=1.28.2+ds1-3+deb12u1+b3"
skopeo_pkg="skopeo=1.9.3+ds1-1+b10"

sde="${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct HEAD)}"
revision="${REVISION:-$(git -C "$ROOT" rev-parse HEAD)}"
version="${VERSION:-$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")}"
services="${SERVICES:-api worker}"
# $OUT as an absolute path that exists (created by this user, so it stays theirs): mounted at
# the same path, release-images.sh in the container writes where it would have on the host.
out="$(realpath -m "${OUT:-$ROOT/dist/oci}")"

inner="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
$buildah_pkg $skopeo_pkg python3 >/dev/null && scripts/release-images.sh"
# buildah unshares a mount namespace and chroots (its copier) even for a build without RUN
# steps: CAP_SYS_ADMIN, with Docker's default seccomp and AppArmor profiles (and SELinux
# labels) out of the way. Not --privileged: no devices, no other capabilities, and engines in
# a restricted sandbox refuse it ("unable to apply caps") while they accept this.
cmd=(docker run --rm --cap-add SYS_ADMIN
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt label=disable
  -e "SOURCE_DATE_EPOCH=$sde" -e "REVISION=$revision" -e "VERSION=$version" -e "OUT=$out" -e "SERVICES=$services"
  -e "RELEASE_OWNER=$(id -u):$(id -g)" -e RELEASE_NO_CONTAINER=1
  -v "$ROOT:$ROOT:ro" -v "$out:$out" -w "$ROOT" "$base" bash -euo pipefail -c "$inner")
if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
mkdir -p "$out"
"${cmd[@]}"
