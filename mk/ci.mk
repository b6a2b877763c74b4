# The CI/CD pipeline (.github/) and the deploy scripts, with their tests.
#
#   make lint-ci        zizmor --offline, actionlint (+ shellcheck of run: blocks), workflow +
#                       dependabot schemas, shellcheck, yamllint
#   make test-ci        lint-ci + tests/ci (pipeline properties, pinned-action facts, the re-run
#                       decision against a stand-in gh, deploy scripts against stand-in
#                       docker/kind/kubectl/aws/curl)
#   make ci-env         what CI derives from the branch: environment, tag, namespace (BRANCH=dev|uat|main)
#   make ci-validate    CI's validate stage: render ORION_ENV's overlay (ORION_*_IMAGE pinned
#                       when set), kubernetes-validate --strict, the k8s policy tests
#   make deploy-kind    CI's deploy stage on a local kind cluster (ORION_ENV=dev by default;
#                       run `make images` first, or set ORION_API_IMAGE/ORION_WORKER_IMAGE)
#   make deploy-eks     the same render to EKS; says "not deployed" without AWS credentials
#   make audit          cargo audit of Cargo.lock (needs GitHub for the advisory database)

CARGO_AUDIT_VERSION := 0.22.2
ORION_ENV ?= dev
CI_OUT    := $(CURDIR)/.tmp/ci
# Without CI's variables, `make ci-env` describes a push of BRANCH.
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo dev)
CI_SCRIPTS := $(wildcard scripts/deploy-*.sh scripts/ci-*.sh) tools/zig-cc

.PHONY: lint-ci test-ci ci-env ci-validate deploy-kind deploy-eks deploy-summary audit

lint-ci: tools ## CI: zizmor (offline), actionlint, workflow/dependabot schemas, shellcheck, yamllint
	zizmor --offline --strict-collection .github/
	actionlint -shellcheck="$$(command -v shellcheck)" .github/workflows/*.yml
	check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
	shellcheck --severity=style $(CI_SCRIPTS)
	yamllint --strict -c .github/yamllint.yaml .github/ tests/ci/fixtures/

test-ci: tools lint-ci ## CI/CD: lint-ci + pipeline and deploy-script tests (no cluster needed)
	pytest -q tests/ci

ci-env: tools ## branch -> environment -> tag -> namespace (GitHub's variables, or BRANCH=...)
	@GITHUB_EVENT_NAME=$${GITHUB_EVENT_NAME:-push} GITHUB_REF_NAME=$${GITHUB_REF_NAME:-$(BRANCH)} \
	  GITHUB_SHA=$${GITHUB_SHA:-$$(git rev-parse HEAD 2>/dev/null || printf '0%.0s' $$(seq 40))} \
	  scripts/deploy-kind.sh ci-env

ci-validate: deps tools ## CI validate stage for ORION_ENV: pinned render, kubernetes-validate --strict, k8s policy
	@mkdir -p $(CI_OUT)
	@sha=$$(scripts/deploy-kind.sh render $(ORION_ENV) $(CI_OUT)/$(ORION_ENV).yaml); \
	  echo "ci-validate: $(CI_OUT)/$(ORION_ENV).yaml sha256 $$sha"; \
	  if [ -n "$${GITHUB_OUTPUT:-}" ]; then echo "manifest_sha256=$$sha" >>"$$GITHUB_OUTPUT"; fi
	@test -n "$(K8S_SCHEMA_VERSIONS)" || { echo "ci-validate: K8S_SCHEMA_VERSIONS (mk/k8s.mk) is empty" >&2; exit 1; }
	@for v in $(K8S_SCHEMA_VERSIONS); do \
	  kubernetes-validate --strict --quiet --kubernetes-version $$v $(CI_OUT)/$(ORION_ENV).yaml; \
	  echo "ci-validate: $(ORION_ENV) render valid (strict) for Kubernetes $$v"; \
	done
	$(MAKE) --no-print-directory test-k8s

deploy-kind: tools ## deploy ORION_ENV (dev) to a local kind cluster: load images, apply, rollout, smoke
	scripts/deploy-kind.sh up $(ORION_ENV)

deploy-eks: tools ## deploy ORION_ENV's validated render to EKS (needs AWS_* and EKS_CLUSTER_NAME)
	scripts/deploy-eks.sh $(ORION_ENV)

deploy-summary: tools ## Markdown summary of a deploy's results file (ORION_RESULTS=...)
	@scripts/deploy-kind.sh summary "$${ORION_RESULTS:?set ORION_RESULTS to the results file}"

audit: rust-targets ## cargo audit of Cargo.lock against the RustSec advisory database
	@if ! cargo install --list | grep -qx 'cargo-audit v$(CARGO_AUDIT_VERSION):'; then \
	  cargo install --locked cargo-audit@$(CARGO_AUDIT_VERSION); \
	fi
	cargo audit --file Cargo.lock

TEST_TARGETS += test-ci
LINT_TARGETS += lint-ci
