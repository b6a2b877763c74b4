#!/usr/bin/env bash
# Installs the Debian packages the test suites use when they are missing.
# Under CI=true a package that cannot be installed is a failure, never a skip.
set -euo pipefail

# command -> Debian package
declare -A need=(
  [promtool]=prometheus
  [prometheus]=prometheus
  [prometheus-alertmanager]=prometheus-alertmanager
  [amtool]=prometheus-alertmanager
  [wrk]=wrk
  [hey]=hey
  [nginx]=nginx-light
  [qemu-aarch64]=qemu-user
  [docker-compose]=docker-compose
  [buildah]=buildah
  [skopeo]=skopeo
  # the release container's Debian 12 image where the pinned one cannot be pulled
  # (scripts/release-base-debootstrap.sh, tests/images/test_release.py)
  [debootstrap]=debootstrap
)

missing=()
for cmd in "${!need[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
    missing+=("${need[$cmd]}")
  fi
done
# python3-venv is needed for the tools venv
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "ensure-deps: installing ${pkgs[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; }; then
  if [ "${CI:-}" = "true" ]; then
    echo "ensure-deps: FAILED to install ${pkgs[*]} (CI=true: this is a failure)" >&2
    exit 1
  fi
  echo "ensure-deps: WARNING could not install ${pkgs[*]}; the suites that need them will say SKIPPED" >&2
fi
