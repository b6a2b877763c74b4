# Monitoring (issue 6): Prometheus config, alert rules, Grafana provisioning — all in monitoring/.
#
#   make lint-monitoring   yamllint, promtool on the compose config and the rules (seconds, no build)
#   make test-monitoring   + promtool unit tests of every alert, the dashboard/annotation checks,
#                          and the live test: real orion-api + orion-worker + Debian's prometheus
#
# The compose config names its rule file by the path inside the prom/prometheus container
# (/etc/prometheus/alerts.yaml). `promtool check config` on it as shipped can only check the
# syntax; the full check (which also loads and lints the rules) runs on a temporary copy whose
# rule path points at this repository's monitoring/alerts.yaml. Nothing else is rewritten.

MONITORING_BIN_DIR ?= $(CURDIR)/dist/amd64

.PHONY: lint-monitoring test-monitoring

TEST_TARGETS += test-monitoring
LINT_TARGETS += lint-monitoring

# yamllint: the default rules without `---`; PromQL wants 160 columns, and the promtool tests'
# expected annotations are whole rendered sentences, so they have no line limit at all.
MONITORING_YAMLLINT := {extends: default, rules: {document-start: disable, line-length: {max: 160}}}
MONITORING_TESTS_YAMLLINT := {extends: default, rules: {document-start: disable, line-length: disable}}

lint-monitoring: deps tools ## promtool check config (compose) and check rules; yamllint monitoring/
	$(VENV_BIN)/yamllint --strict -d '$(MONITORING_YAMLLINT)' monitoring/alerts.yaml monitoring/prometheus.yml monitoring/grafana/
	$(VENV_BIN)/yamllint --strict -d '$(MONITORING_TESTS_YAMLLINT)' monitoring/alerts.test.yaml monitoring/alerts.daily.test.yaml
	promtool check config --syntax-only monitoring/prometheus.yml
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	sed 's#^  - /etc/prometheus/alerts.yaml$$#  - $(CURDIR)/monitoring/alerts.yaml#' monitoring/prometheus.yml > "$$tmp/prometheus.yml"; \
	grep -qF -- '- $(CURDIR)/monitoring/alerts.yaml' "$$tmp/prometheus.yml"; \
	promtool check config "$$tmp/prometheus.yml"
	promtool check rules monitoring/alerts.yaml

# The live test runs the binaries the images ship (`make build`: static musl, auditable).
# A plain `cargo build --release` here would rebuild them: cargo-auditable's wrapper changes
# the fingerprint, so the two builds would undo each other on every run.
test-monitoring: deps tools lint-monitoring build ## alert unit tests, dashboard checks, live Prometheus against the real binaries
	promtool test rules monitoring/alerts.test.yaml monitoring/alerts.daily.test.yaml
	ORION_BIN_DIR=$(MONITORING_BIN_DIR) $(VENV_BIN)/pytest -q tests/monitoring
