#!/usr/bin/env bash
# release-base-debootstrap.sh: a Debian 12 image for scripts/release-container.sh, built here
# from Debian's own packages, for a docker engine that cannot pull the pinned public one.
#
#   RELEASE_BASE_IMAGE="$(scripts/release-base-debootstrap.sh)" scripts/release-container.sh
#
# debootstrap (minbase) bookworm from the Debian mirror -> tar -> `docker import`, with the
# apt sources the official debian:bookworm image has (bookworm, bookworm-updates,
# bookworm-security) and, so that every release build in it does not download them again,
# the .deb files of the packages release-container.sh pins (buildah, skopeo, python3) in
# apt's cache (`apt-get install --download-only`; the container still runs its own
# `apt-get update && apt-get install` of the pinned versions, which checks them against the
# mirror's index of the day). Prints the image's tag.
#
# The tag is keyed on what built it: this script, the debootstrap version, suite, mirror and
# the pinned packages. An image with that tag is reused (seconds); anything else rebuilds
# (a few minutes, network bound). Not the pinned public image: its bytes differ, its package
# set is the same Debian release's; CI's build job uses the pinned public image.
#
# Environment: RELEASE_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# RELEASE_DEBIAN_SECURITY (default http://deb.debian.org/debian-security), TMPDIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "release-base-debootstrap: $*" >&2; exit 1; }
suite=bookworm
mirror="${RELEASE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${RELEASE_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"

command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap; make deps installs it)"
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
# The pins come from release-container.sh itself: one source of truth.
pins="$(sed -n 's/^\(buildah\|skopeo\)_pkg="\([^"]*\)"$/\2/p' "$ROOT/scripts/release-container.sh" | tr '\n' ' ')"
[[ "$pins" == buildah=*" skopeo="*" " ]] || die "cannot read the buildah/skopeo pins of scripts/release-container.sh"
packages="${pins}python3"

key="$(printf '%s\n' "$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)" \
  "$(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || debootstrap --version)" \
  "$suite" "$mirror" "$security" "$packages" | sha256sum | cut -c1-16)"
tag="orion-release-base:debootstrap-$suite-$key"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/orion-release-base.XXXXXX")"
cid=""
cleanup() {
  [ -z "$cid" ] || docker rm -f "$cid" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
echo "release-base-debootstrap: debootstrap $suite from $mirror (cache tag $tag)" >&2
debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
rm -f "$work/rootfs/etc/apt/sources.list"
cat >"$work/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# Nothing of the build host's: no resolv.conf or hostname (docker provides them).
: >"$work/rootfs/etc/resolv.conf"
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*_Packages
tar -C "$work/rootfs" --numeric-owner -c . | docker import -c 'CMD ["bash"]' - "$tag.rootfs" >/dev/null
rm -rf "$work/rootfs"
# shellcheck disable=SC2086 # packages is a list of apt arguments
cid="$(docker create "$tag.rootfs" bash -euo pipefail -c \
  "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only --no-install-recommends $packages >/dev/null")"
docker start -a "$cid" >&2 || die "could not download $packages in the image (is the mirror reachable?)"
docker commit "$cid" "$tag" >/dev/null
docker rm "$cid" >/dev/null
cid=""
docker rmi "$tag.rootfs" >/dev/null
echo "$tag"
