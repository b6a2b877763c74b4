# Release images anyone can rebuild bit for bit (docs/releases.md).
#
#   make release-images   dist/oci/orion-{api,worker}/: OCI layouts, one index each
#                         (linux/amd64 + linux/arm64) from Dockerfile.scratch and dist/, built
#                         by scripts/release-images.sh (buildah, timestamps from the commit);
#                         dist/sbom/orion-{api,worker}.cdx.json: their SBOMs, validated
#   make verify-reproducible   a second clean clone (other path, other umask) builds the
#                         same commit: binaries, index digests and SBOMs must be identical
#   make verify-release IMAGE=ghcr.io/orionlynn19/orion-api@sha256:...
#                         rebuild a released image at its revision label, compare digests
#
# CI's build job runs `make release-images` too: on its runner, whose buildah is another
# version, scripts/release-images.sh runs itself in the pinned Debian 12 container that has
# the release buildah (scripts/release-container.sh), same script, same flags.

RELEASE_SCRIPTS := $(wildcard scripts/release-*.sh)

.PHONY: release-images release-sbom verify-reproducible verify-release test-release lint-release

# The SBOMs of the images in dist/oci, one per image index, then validated.
define release_sbom_recipe
	@test -f dist/oci/digests.txt || { echo "release-sbom: dist/oci/digests.txt missing (make release-images)" >&2; exit 1; }
	@for svc in api worker; do \
	  digest=$$(awk -v n=orion-$$svc '$$1 == n {print $$2}' dist/oci/digests.txt); \
	  $(VENV_BIN)/python scripts/release-sbom.py generate $$svc --digest "$$digest" --out dist/sbom/orion-$$svc.cdx.json; \
	done
	$(VENV_BIN)/python scripts/release-sbom.py validate dist/sbom/orion-api.cdx.json dist/sbom/orion-worker.cdx.json
endef

release-images: build tools ## multi-arch image indexes in dist/oci/ (OCI layouts) + SBOMs in dist/sbom/
	scripts/release-images.sh
	$(release_sbom_recipe)

release-sbom: tools ## CycloneDX SBOMs of the images in dist/oci (from the binaries' cargo-auditable data), validated
	$(release_sbom_recipe)

verify-reproducible: release-images ## build this commit again in a clean clone (other path, umask): identical bytes?
	VENV=$(VENV) scripts/release-verify-reproducible.sh

verify-release: tools ## IMAGE=<registry>/orion-api@sha256:... (or oci:DIR): rebuild at its revision, compare digests
	@test -n "$(IMAGE)" || { echo "verify-release: set IMAGE=ghcr.io/orionlynn19/orion-api@sha256:..." >&2; exit 2; }
	VENV=$(VENV) scripts/release-verify.sh "$(IMAGE)"

# After verify-reproducible (same `make test` run): its clone B is reused by the
# verify-release tests, so they rebuild images without recompiling the binaries.
test-release: release-images tools ## release layouts: ELF per platform layer, metadata, SBOM, verify-release, CI push commands
	ORION_REPRO_CLONE=$(CURDIR)/.tmp/reproducible/b/another-path-of-another-length/orion \
	  $(VENV_BIN)/pytest -q -rfEs tests/images/test_release.py

lint-release: tools ## shellcheck the release scripts
	$(VENV_BIN)/shellcheck --severity=style $(RELEASE_SCRIPTS)

TEST_TARGETS += verify-reproducible test-release
LINT_TARGETS += lint-release
