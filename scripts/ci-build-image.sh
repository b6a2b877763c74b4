#!/usr/bin/env bash
# ci-build-image.sh SERVICE   (SERVICE: api | worker)
#
# CI's image build: one multi-arch image from the binaries `make build` cross-compiled into
# dist/amd64 and dist/arm64. Dockerfile.scratch only COPYs, so BuildKit executes nothing
# for either platform: no QEMU, no binfmt, no emulated compiler that could crash.
#
# Environment:
#   TAGS       space-separated full references (ghcr.io/orionlynn19/orion-api:dev ...); required
#   PUSH       true: push with SBOM + provenance attestations and print digest=sha256:...
#              and image=<repository of the first tag>@sha256:... (also to $GITHUB_OUTPUT);
#              false: build both platforms, push nothing (pull requests)
#   PLATFORMS  default linux/amd64,linux/arm64
#   VERSION    default: the workspace version in Cargo.toml; REVISION default: git HEAD
#   ATTEMPTS   tries of the build+push (default 3, see ci-retry.sh): a registry hiccup
#              costs a retry, not a red pipeline
#   DRY_RUN=1  print the command instead of running it (tests/ci)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
service="${1:-}"
case "$service" in
  api) port=8000 ;;
  worker) port=9091 ;;
  *) echo "usage: ci-build-image.sh api|worker" >&2; exit 2 ;;
esac
[ -n "${TAGS:-}" ] || { echo "ci-build-image: TAGS is empty" >&2; exit 2; }
push="${PUSH:-false}"
case "$push" in true|false) ;; *) echo "ci-build-image: PUSH must be true or false" >&2; exit 2 ;; esac
platforms="${PLATFORMS:-linux/amd64,linux/arm64}"
version="${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)}"
revision="${REVISION:-$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)}"

# The binaries must exist and be of the right architecture before BuildKit copies them:
# ELF e_machine (bytes 18-19) is 62 for x86-64 and 183 for AArch64.
elf_machine() { od -An -t u2 -j 18 -N 2 "$1" | tr -d ' '; }
IFS=, read -r -a plats <<<"$platforms"
for plat in "${plats[@]}"; do
  arch="${plat#linux/}"
  bin="$ROOT/dist/$arch/orion-$service"
  case "$arch" in amd64) want=62 ;; arm64) want=183 ;; *) echo "ci-build-image: unsupported platform $plat" >&2; exit 2 ;; esac
  if [ "${DRY_RUN:-0}" != 1 ]; then
    [ -f "$bin" ] || { echo "ci-build-image: $bin is missing (run: make build)" >&2; exit 1; }
    got="$(elf_machine "$bin")"
    [ "$got" = "$want" ] || { echo "ci-build-image: $bin is ELF machine $got, expected $want for $arch" >&2; exit 1; }
  fi
done

meta="$(mktemp)"
trap 'rm -f "$meta"' EXIT
cmd=(docker buildx build
  --file "$ROOT/Dockerfile.scratch"
  --platform "$platforms"
  --build-arg "SERVICE=$service"
  --build-arg "EXPOSE_PORT=$port"
  --build-arg "VERSION=$version"
  --build-arg "REVISION=$revision"
  --metadata-file "$meta")
for tag in $TAGS; do cmd+=(--tag "$tag"); done
if [ "$push" = true ]; then
  # SBOM (SPDX, from the cargo-auditable data in the binaries) and SLSA provenance are
  # pushed as attestations next to the image index.
  cmd+=(--sbom=true --provenance=mode=max --push)
else
  cmd+=(--output "type=image,push=false")
fi
cmd+=("$ROOT")

if [ "${DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi

"$ROOT/scripts/ci-retry.sh" "${ATTEMPTS:-3}" "${cmd[@]}"

if [ "$push" = true ]; then
  digest="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["containerimage.digest"])' "$meta")"
  [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "ci-build-image: no digest in buildx metadata" >&2; exit 1; }
  first="${TAGS%% *}"
  out="$(printf 'digest=%s\nimage=%s@%s\n' "$digest" "${first%:*}" "$digest")"
  echo "$out"
  if [ -n "${GITHUB_OUTPUT:-}" ]; then echo "$out" >>"$GITHUB_OUTPUT"; fi
fi
