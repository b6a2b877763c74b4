# Documentation: README.md (the front door), ARCHITECTURE.md (the code map) and docs/ (the manual).
#
#   make lint-docs   every relative link and #anchor resolves (GitHub's slugs), every alert's
#                    runbook_url names an existing heading, README and ARCHITECTURE within their
#                    budgets, every `make` target the docs name exists, every Prometheus/Alertmanager/
#                    Grafana image tag they name is docker-compose.yml's (seconds, no build)
#   make test-docs   + README's quick-start answer (curl /health) against the real binary
#
# The image and binary sizes docs/images.md states are checked by tests/images (make test-images),
# which has the built images.

.PHONY: lint-docs test-docs

lint-docs: tools ## docs: links and anchors resolve, runbook URLs, page budgets, make targets named exist
	$(VENV_BIN)/pytest -q tests/docs --ignore=tests/docs/test_quick_start.py

test-docs: lint-docs build ## docs: lint-docs + README's /health answer is the real binary's
	ORION_BIN_DIR=$(CURDIR)/dist/$(HOST_ARCH) $(VENV_BIN)/pytest -q tests/docs/test_quick_start.py

TEST_TARGETS += test-docs
LINT_TARGETS += lint-docs
