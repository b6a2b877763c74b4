#!/usr/bin/env bash
# release-attest.sh SERVICE IMAGE: attach the image's SBOM and its build provenance to it,
# as attestations signed keylessly by this workflow (cosign attest).
#
# IMAGE is the pushed index by digest (ci-build-image.sh's image= output). The SBOM is the one
# `make release-sbom` wrote for that digest (its metadata.component names it): a file for
# another digest is refused. The provenance is an SLSA v1 predicate (release-provenance.py:
# commit, workflow, run, the pinned build container). Attestations, like the signature, refer
# to the digest and are not part of it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
service="${1:-}" image="${2:-}"
case "$service" in api|worker) ;; *) echo "usage: release-attest.sh api|worker IMAGE@sha256:..." >&2; exit 2 ;; esac
[[ "$image" =~ @sha256:[0-9a-f]{64}$ ]] || { echo "release-attest: IMAGE='$image' is not a reference by digest" >&2; exit 2; }
sbom="$ROOT/dist/sbom/orion-$service.cdx.json"
[ -f "$sbom" ] || { echo "release-attest: $sbom is missing (make release-sbom)" >&2; exit 1; }
digest="${image##*@}"
named="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["component"]["purl"])' "$sbom")"
[ "$named" = "pkg:oci/orion-$service@${digest/:/%3A}" ] || {
  echo "release-attest: $sbom describes $named, not $digest" >&2; exit 1; }
prov="$(mktemp)"
trap 'rm -f "$prov"' EXIT
python3 "$ROOT/scripts/release-provenance.py" "$service" "$digest" >"$prov"
"$ROOT/scripts/ci-retry.sh" "${ATTEMPTS:-3}" cosign attest --yes --type cyclonedx --predicate "$sbom" "$image"
"$ROOT/scripts/ci-retry.sh" "${ATTEMPTS:-3}" cosign attest --yes --type slsaprovenance1 --predicate "$prov" "$image"
