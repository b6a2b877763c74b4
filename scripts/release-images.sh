#!/usr/bin/env bash
# release-images.sh: the release image build, the same here, in CI and for anyone who
# rebuilds a release (`make release-images` runs exactly this).
#
# For orion-api and orion-worker: one image per platform from Dockerfile.scratch and the
# dist/<arch>/ binaries `make build` made (buildah, Docker format, timestamps from the
# commit), then one manifest list with the platforms in a fixed order (release-oci.py),
# written as an OCI image layout to $OUT/orion-<svc>/ (ref name "latest"). Prints
# `orion-<svc> sha256:...` per image and writes the same lines to $OUT/digests.txt.
#
# Environment:
#   SOURCE_DATE_EPOCH  default: the commit time of HEAD (never the clock)
#   VERSION            default: the workspace version in Cargo.toml
#   REVISION           default: git HEAD (the image's org.opencontainers.image.revision)
#   OUT                default: $ROOT/dist/oci
#   SERVICES           default: "api worker"
#   RELEASE_OWNER      uid:gid that what this run writes under $OUT is handed to (chown -R),
#                      even when it fails; release-container.sh sets it to the invoking user's
#   RELEASE_BUILDAH_VERSION  the buildah version releases are built with (default 1.28.2).
#                      Another version may write other bytes: with another (or none) this
#                      script runs itself in scripts/release-container.sh's pinned Debian 12
#                      when a docker engine is there, and fails otherwise;
#                      RELEASE_ANY_BUILDAH=1 builds anyway (then the digests prove nothing),
#                      RELEASE_NO_CONTAINER=1 (set inside the container) never delegates
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "release-images: $*" >&2; exit 1; }

sde="${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct HEAD)}"
[[ "$sde" =~ ^[0-9]+$ ]] || { echo "release-images: SOURCE_DATE_EPOCH='$sde' is not a number of seconds" >&2; exit 2; }
want_buildah="${RELEASE_BUILDAH_VERSION:-1.28.2}"
have_buildah="$(buildah --version 2>/dev/null | awk '{print $3}' || true)"
if [ "$have_buildah" != "$want_buildah" ] && [ "${RELEASE_ANY_BUILDAH:-0}" != 1 ]; then
  # Not the release buildah (CI's Ubuntu runner, say): the same script in the pinned Debian
  # 12 container that has it, when there is a docker engine to run it.
  if [ "${RELEASE_NO_CONTAINER:-0}" != 1 ] && docker info >/dev/null 2>&1; then
    echo "release-images: buildah ${have_buildah:-missing} here, releases are built with $want_buildah:" \
      "running in the pinned Debian 12 container (scripts/release-container.sh)" >&2
    exec "$ROOT/scripts/release-container.sh"
  fi
  die "buildah ${have_buildah:-is missing}, releases are built with $want_buildah and there is no docker engine for" \
    "scripts/release-container.sh (RELEASE_ANY_BUILDAH=1 to build anyway: the digests then prove nothing)"
fi

version="${VERSION:-$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")}"
revision="${REVISION:-$(git -C "$ROOT" rev-parse HEAD)}"
out="${OUT:-$ROOT/dist/oci}"
services="${SERVICES:-api worker}"

owner="${RELEASE_OWNER:-}"
[ -z "$owner" ] || [[ "$owner" =~ ^[0-9]+:[0-9]+$ ]] ||
  { echo "release-images: RELEASE_OWNER='$owner' is not uid:gid" >&2; exit 2; }
work="$(mktemp -d "${TMPDIR:-/tmp}/orion-release.XXXXXX")"
wrote=()  # what this run wrote under $out, for RELEASE_OWNER
finish() {
  local rc=$? p
  rm -rf "$work"
  if [ -n "$owner" ]; then
    for p in "${wrote[@]}"; do
      if [ -e "$p" ] && ! chown -R "$owner" "$p"; then
        echo "release-images: cannot hand $p to $owner" >&2; rc=1
      fi
    done
  fi
  exit "$rc"
}
trap finish EXIT
storage=(--storage-driver vfs --root "$work/storage" --runroot "$work/run")

# The build context holds only the binaries, copied with fixed modes: neither the clone's
# path nor its umask reaches the layer (buildah's COPY keeps the source file's mode).
for arch in amd64 arm64; do
  install -d -m 0755 "$work/ctx/dist/$arch"
  for svc in $services; do
    bin="$ROOT/dist/$arch/orion-$svc"
    [ -f "$bin" ] || die "$bin is missing (run: make build)"
    install -m 0755 "$bin" "$work/ctx/dist/$arch/orion-$svc"
  done
done

[ -d "$out" ] || wrote+=("$out")
# buildah records a digest of each COPY source in the image's history ("COPY file:<sha256>"):
# a tar header of the file, with the NAMES of its owner and group (uid/gid 0), which Go's
# tar.FileInfoHeader looks up after buildah's copier chroots into the build context (buildah
# v1.28.2 copier/copier.go; Go src/archive/tar/stat_unix.go). With no passwd file there the
# name comes from the host's NSS: nss-systemd answers "root" for uid 0 even in the chroot
# (this project's machines), Debian's container images have only "files" and answer nothing,
# and the two wrote different config digests. These two files make it "root" on every host;
# COPY takes only dist/, so they are in no image.
install -d -m 0755 "$work/ctx/etc"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n' >"$work/ctx/etc/passwd"
printf 'root:x:0:\n' >"$work/ctx/etc/group"
chmod 0644 "$work/ctx/etc/passwd" "$work/ctx/etc/group"

mkdir -p "$out" "$work/plat"
wrote+=("$out/digests.txt.new" "$out/digests.txt")
: >"$out/digests.txt.new"
for svc in $services; do
  case "$svc" in
    api) port=8000 ;;
    worker) port=9091 ;;
    *) echo "release-images: SERVICES: unknown service '$svc' (api, worker)" >&2; exit 2 ;;
  esac
  sources=()
  for arch in amd64 arm64; do  # this order is the order in the manifest list
    buildah "${storage[@]}" build --quiet --format docker --identity-label=false \
      --timestamp "$sde" --platform "linux/$arch" \
      --build-arg "TARGETARCH=$arch" --build-arg "SERVICE=$svc" --build-arg "EXPOSE_PORT=$port" \
      --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
      -f "$ROOT/Dockerfile.scratch" -t "localhost/orion-$svc:$arch" "$work/ctx" >/dev/null
    buildah "${storage[@]}" push --quiet --format docker "localhost/orion-$svc:$arch" \
      "oci:$work/plat/$svc-$arch:img" >/dev/null
    sources+=("$work/plat/$svc-$arch:img:linux/$arch")
  done
  rm -rf "$out/orion-$svc"
  wrote+=("$out/orion-$svc")
  digest="$(python3 "$ROOT/scripts/release-oci.py" assemble --out "$out/orion-$svc" --ref latest "${sources[@]}")"
  echo "orion-$svc $digest" | tee -a "$out/digests.txt.new"
done
mv "$out/digests.txt.new" "$out/digests.txt"
