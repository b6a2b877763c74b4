#!/usr/bin/env bash
# What `make up` and `make images` check before they build anything, so that a machine
# that cannot finish says so within seconds, not after a three-minute build.
#
#   up-preflight.sh tools      every prerequisite below; one line per missing one, with how
#                              to get it (exit 1 if any is missing)
#   up-preflight.sh docker     the engine answers (bounded), runs Linux containers, and is
#                              API 1.41 (Docker 20.10) or newer
#   up-preflight.sh upstream   the images docker-compose.yml pulls (prom/..., grafana/...)
#                              are here or pullable; a pull that shows no sign of a registry
#                              within UP_PULL_TIMEOUT seconds (default 20) is stopped, and the
#                              answer is `make up STACK=app`
#   up-preflight.sh list       the prerequisites as README's Markdown list (README.md, between
#                              <!-- prerequisites:start --> and <!-- prerequisites:end -->;
#                              tests/images/test_make_up.py keeps the two equal)
#
# Several commands run in order: `up-preflight.sh tools docker upstream`.
#
# The prerequisite list lives here and nowhere else. It is what a fresh clone needs on the
# host for `make up`; everything else (the pinned Rust toolchain and musl targets, zig for
# mimalloc's C, cargo-auditable) the build installs for itself from rustup, PyPI and crates.io.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${UP_PREFIX:-up}"
say() { printf '%s: %s\n' "$PREFIX" "$*" >&2; }

# id | what README says | how to get it. Keep the checks in has_prerequisite in step.
PREREQUISITES=(
  "docker|Docker: Engine 20.10 or newer, or Docker Desktop (Linux containers), usable without sudo|install Docker Engine (https://docs.docker.com/engine/install/) or Docker Desktop (https://docs.docker.com/desktop/)"
  "compose|Docker Compose: the \`docker compose\` plugin, or the older \`docker-compose\`|Docker Desktop includes it; on Linux install the compose plugin (https://docs.docker.com/compose/install/linux/, Debian/Ubuntu: docker-compose-plugin) or your distribution's docker-compose"
  "make|GNU make 3.82 or newer|Debian/Ubuntu: sudo apt-get install make; macOS: brew install make, then run gmake"
  "rustup|rustup: it installs the pinned Rust toolchain and the two musl targets by itself|curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh (https://rustup.rs), then open a new shell"
  "cc|a C compiler for this machine (\`cc\`): Rust links its build scripts with it|Debian/Ubuntu: sudo apt-get install gcc; Fedora: sudo dnf install gcc; macOS: xcode-select --install"
  "python3|Python 3.9 or newer with venv: the build installs zig (mimalloc's C compiler) from PyPI into .venv|Debian/Ubuntu: sudo apt-get install python3-venv; macOS: xcode-select --install"
)

# has_prerequisite ID: true when it is there.
has_prerequisite() {
  case "$1" in
    docker) command -v docker >/dev/null 2>&1 ;;
    compose) docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 ;;
    make) make_at_least_3_82 ;;
    rustup) command -v rustup >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/rustup" ] ;;
    cc) command -v cc >/dev/null 2>&1 ;;
    python3) python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 9))' >/dev/null 2>&1 ;;
    *) say "unknown prerequisite $1"; return 1 ;;
  esac
}

# .SHELLFLAGS (the Makefile's `set -euo pipefail` for every recipe) is GNU make 3.82's;
# macOS's /usr/bin/make is 3.81 and silently ignores it. Under make, MAKE_VERSION is make's own.
make_at_least_3_82() {
  local v="${MAKE_VERSION:-}"
  if [ -z "$v" ]; then
    v="$(make --version 2>/dev/null | sed -n '1s/^GNU Make \([0-9.]*\).*/\1/p')"
  fi
  [ -n "$v" ] || return 1
  local major="${v%%.*}" rest minor
  rest="${v#*.}"
  minor="${rest%%.*}"
  [ "$major" -gt 3 ] || { [ "$major" -eq 3 ] && [ "${minor:-0}" -ge 82 ]; }
}

cmd_tools() {
  local entry id text hint missing=0
  for entry in "${PREREQUISITES[@]}"; do
    IFS='|' read -r id text hint <<<"$entry"
    if ! has_prerequisite "$id"; then
      say "missing: $text. Get it: $hint"
      missing=1
    fi
  done
  if [ "$missing" = 1 ]; then
    say "install the above and run make up again (README, Set-up, lists these prerequisites)"
    return 1
  fi
}

cmd_list() {
  local entry id text hint
  for entry in "${PREREQUISITES[@]}"; do
    IFS='|' read -r id text hint <<<"$entry"
    printf -- '- %s\n' "$text"
  done
}

# bounded SECONDS LOG PATTERN CMD...: runs CMD with its output in LOG. Waits for it without a
# limit once a line of its output matches PATTERN (the other side is answering), else for at
# most SECONDS, then stops it and returns 124. Otherwise returns CMD's own status. Plain bash:
# GNU `timeout` is not on macOS.
bounded() {
  local seconds="$1" log="$2" pattern="$3" pid ticks=0 answered=0
  shift 3
  "$@" >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$answered" = 0 ] && [ -n "$pattern" ] && grep -Eq "$pattern" "$log"; then
      answered=1
    fi
    if [ "$answered" = 0 ] && [ "$ticks" -ge $((seconds * 5)) ]; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      return 124
    fi
    sleep 0.2
    ticks=$((ticks + 1))
  done
  wait "$pid"
}

TMP="$(mktemp -d "${TMPDIR:-/tmp}/orion-preflight.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

cmd_docker() {
  local out rc=0 version api os arch
  bounded "${UP_DOCKER_TIMEOUT:-15}" "$TMP/version" '' \
    docker version --format '{{.Server.Version}}|{{.Server.APIVersion}}|{{.Server.Os}}|{{.Server.Arch}}' || rc=$?
  out="$(cat "$TMP/version")"
  if [ "$rc" = 124 ]; then
    say "Docker does not answer within ${UP_DOCKER_TIMEOUT:-15}s (docker version hangs; DOCKER_HOST=${DOCKER_HOST:-unset})"
    return 1
  fi
  if [ "$rc" != 0 ]; then
    say "Docker does not answer: $(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1)"
    case "$out" in
      *"permission denied"*) say "let your user use Docker: sudo usermod -aG docker \$USER, then log in again (https://docs.docker.com/engine/install/linux-postinstall/)" ;;
      *) say "start Docker (Docker Desktop, or: sudo systemctl start docker) and run make up again" ;;
    esac
    return 1
  fi
  IFS='|' read -r version api os arch <<<"$(printf '%s' "$out" | tail -n 1)"
  if [ "$os" != linux ]; then
    say "the Docker engine runs $os containers; switch Docker Desktop to Linux containers"
    return 1
  fi
  if ! api_at_least "$api" 1.41; then
    say "the Docker engine is $version (API $api); make up needs Docker 20.10 (API 1.41) or newer"
    return 1
  fi
  # The images hold this machine's build (make build-host): an engine elsewhere (DOCKER_HOST)
  # on another architecture could load them but not run them.
  local host
  host="$(uname -m | sed -e 's/^x86_64$/amd64/' -e 's/^aarch64$/arm64/')"
  if [ "$arch" != "$host" ]; then
    say "the Docker engine runs linux/$arch, this machine is $host: make up builds for this machine (DOCKER_HOST=${DOCKER_HOST:-unset})"
    return 1
  fi
  say "Docker $version (API $api, linux/$arch) answers"
}

# api_at_least HAVE WANT: dotted API versions (1.41 < 1.48 < 1.100).
api_at_least() {
  local have_major="${1%%.*}" have_minor="${1#*.}" want_major="${2%%.*}" want_minor="${2#*.}"
  [ "$have_major" -gt "$want_major" ] || { [ "$have_major" -eq "$want_major" ] && [ "$have_minor" -ge "$want_minor" ]; }
}

# The images compose pulls: every `image:` of docker-compose.yml but our own orion-*.
upstream_images() {
  sed -nE 's/^ +image: +"?([^" #]+)"?.*/\1/p' "$ROOT/docker-compose.yml" | grep -v '^orion-' || true
}

cmd_upstream() {
  local img rc timeout="${UP_PULL_TIMEOUT:-20}"
  # Lines the daemon only prints once a registry has answered with the image's manifest
  # (moby's pull progress; the same words with the classic and the containerd image store).
  local answered='Pulling fs layer|Waiting|Downloading|Verifying Checksum|Download complete|Extracting|Pull complete|Already exists|Digest: |Status: '
  for img in $(upstream_images); do
    if docker image inspect "$img" >/dev/null 2>&1; then
      continue
    fi
    say "pulling $img (the full stack's; nothing is built before it is here)"
    rc=0
    bounded "$timeout" "$TMP/pull" "$answered" docker pull "$img" || rc=$?
    if [ "$rc" = 0 ]; then
      continue
    fi
    if [ "$rc" = 124 ]; then
      say "cannot pull $img: no registry answered within ${timeout}s (UP_PULL_TIMEOUT)."
    else
      say "cannot pull $img: $(grep -v '^[[:space:]]*$' "$TMP/pull" | tail -n 1)"
    fi
    say "without registry access, run api and worker alone:  make up STACK=app"
    return 1
  done
}

[ $# -gt 0 ] || { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }
for cmd in "$@"; do
  case "$cmd" in
    tools) cmd_tools ;;
    docker) cmd_docker ;;
    upstream) cmd_upstream ;;
    list) cmd_list ;;
    *) say "unknown check '$cmd' (tools, docker, upstream, list)"; exit 2 ;;
  esac
done
