# Monitoring (issues 6, 12): Prometheus config, alert rules, Alertmanager config, Grafana
# provisioning — all in monitoring/.
#
#   make lint-monitoring   yamllint, promtool on the compose config and the rules, amtool
#                          check-config on alertmanager.yml (seconds, no build)
#   make test-monitoring   + promtool unit tests of every alert (incl. the SLO burn-rate pairs),
#                          the amtool routing table, the dashboard/annotation checks, and the live
#                          tests: real orion-api + orion-worker + Debian's prometheus and
#                          prometheus-alertmanager, notifications caught by an in-test webhook; then
#                          the same checks by the promtool/amtool of the images compose and k8s
#                          ship (scripts/monitoring-upstream-check.sh: where they can be pulled,
#                          i.e. CI's GitHub runner; elsewhere it says NOT RUN and which ran)
#
# The compose config names its rule files by their paths inside the prom/prometheus container
# (/etc/prometheus/alerts.yaml, slo.yaml). `promtool check config` on it as shipped can only
# check the syntax; the full check (which also loads and lints the rules) runs on a temporary
# copy whose rule paths point at this repository's monitoring/. Nothing else is rewritten.

MONITORING_BIN_DIR ?= $(CURDIR)/dist/amd64
# promtool unit test files; run two at a time (the SLO and daily files take 10-20 s each).
MONITORING_RULE_TESTS := monitoring/alerts.test.yaml monitoring/alerts.daily.test.yaml \
  monitoring/alerts.slo.test.yaml monitoring/alerts.slo-slow.test.yaml

.PHONY: lint-monitoring test-monitoring

TEST_TARGETS += test-monitoring
LINT_TARGETS += lint-monitoring

# yamllint: the default rules without `---`; PromQL wants 160 columns, and the promtool tests'
# expected annotations are whole rendered sentences, so they have no line limit at all.
MONITORING_YAMLLINT := {extends: default, rules: {document-start: disable, line-length: {max: 160}}}
MONITORING_TESTS_YAMLLINT := {extends: default, rules: {document-start: disable, line-length: disable}}

lint-monitoring: deps tools ## promtool check config (compose) and check rules; yamllint monitoring/
	$(VENV_BIN)/yamllint --strict -d '$(MONITORING_YAMLLINT)' monitoring/alerts.yaml monitoring/slo.yaml monitoring/prometheus.yml monitoring/grafana/ \
	  monitoring/alertmanager.yml monitoring/alertmanager.routes.test.yaml
	$(VENV_BIN)/yamllint --strict -d '$(MONITORING_TESTS_YAMLLINT)' $(MONITORING_RULE_TESTS)
	amtool check-config monitoring/alertmanager.yml
	promtool check config --syntax-only monitoring/prometheus.yml
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	sed 's#^  - /etc/prometheus/\(alerts\|slo\).yaml$$#  - $(CURDIR)/monitoring/\1.yaml#' monitoring/prometheus.yml > "$$tmp/prometheus.yml"; \
	grep -qF -- '- $(CURDIR)/monitoring/alerts.yaml' "$$tmp/prometheus.yml"; \
	grep -qF -- '- $(CURDIR)/monitoring/slo.yaml' "$$tmp/prometheus.yml"; \
	promtool check config "$$tmp/prometheus.yml"
	promtool check rules monitoring/alerts.yaml monitoring/slo.yaml
	$(VENV_BIN)/shellcheck --severity=style scripts/monitoring-upstream-check.sh

# The live test runs the binaries the images ship (`make build`: static musl, auditable).
# A plain `cargo build --release` here would rebuild them: cargo-auditable's wrapper changes
# the fingerprint, so the two builds would undo each other on every run.
test-monitoring: deps tools lint-monitoring build ## alert unit tests, dashboard checks, live Prometheus against the real binaries
	printf '%s\n' $(MONITORING_RULE_TESTS) | xargs -P 2 -n 1 promtool test rules
	scripts/monitoring-upstream-check.sh $(notdir $(MONITORING_RULE_TESTS))
	ORION_BIN_DIR=$(MONITORING_BIN_DIR) $(VENV_BIN)/pytest -q tests/monitoring
