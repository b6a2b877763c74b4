# Scratch images, the local docker compose stack, and their tests.
#
#   make images            orion-api:$(TAG), orion-worker:$(TAG) for the host architecture
#   make up [STACK=app]    build + images + compose up; waits for health, then (full stack)
#                          checks Prometheus, Alertmanager and Grafana (monitoring/verify_stack.py,
#                          one line per check) and prints the URLs
#   make down              stop and remove the stack (the Prometheus volume is kept)
#
# The images are the release build's (mk/release.mk: both architectures in one index per
# service, dist/oci/); `make images` loads this host's platform of each into docker.

# service:port it EXPOSEs (api serves metrics on its own port; worker on 9091).
IMAGE_SERVICES := api:8000 worker:9091
# Docker's architecture names, as used in dist/.
HOST_ARCH      := $(shell uname -m | sed -e 's/^x86_64$$/amd64/' -e 's/^aarch64$$/arm64/')
IMAGE_VERSION  := $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
IMAGE_REVISION  = $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# BuildKit when the buildx plugin exists; otherwise the legacy builder (Docker 20.10
# here), which is why Dockerfile.scratch defaults TARGETARCH and we pass it anyway.
DOCKER_BUILDKIT ?= $(shell docker buildx version >/dev/null 2>&1 && echo 1 || echo 0)
# Compose v2 plugin when present, the v1 `docker-compose` binary otherwise.
COMPOSE = $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)
# full = api, worker, prometheus, alertmanager, grafana; app = api and worker only (no image pulls).
STACK ?= full
UP_TIMEOUT ?= 60

.PHONY: images up down test-images lint-images bench-images

images: release-images ## orion-api:$(TAG), orion-worker:$(TAG): this host's platform of the release indexes in dist/oci
	@for pair in $(IMAGE_SERVICES); do \
	  svc=$${pair%%:*}; \
	  echo "images: orion-$$svc:$(TAG) (linux/$(HOST_ARCH) of dist/oci/orion-$$svc, the release build)"; \
	  skopeo copy --quiet --override-os linux --override-arch $(HOST_ARCH) \
	    oci:dist/oci/orion-$$svc:latest docker-daemon:orion-$$svc:$(TAG) >/dev/null; \
	done
	@docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' --filter 'reference=orion-*:$(TAG)'

up: images ## run the stack (api, worker, Prometheus, Alertmanager, Grafana); STACK=app for api+worker only
	@case "$(STACK)" in \
	  app) services="api worker";; \
	  full) services=""; \
	    for f in monitoring/prometheus.yml monitoring/alerts.yaml monitoring/slo.yaml monitoring/alertmanager.yml monitoring/alertmanager-secrets \
	             monitoring/grafana/provisioning/datasources monitoring/grafana/provisioning/dashboards monitoring/grafana/dashboards; do \
	      [ -e "$$f" ] || { echo "up: $$f is missing (docker would create an empty directory in its place)" >&2; exit 1; }; \
	    done; \
	    for img in $$(sed -nE 's/^ +image: +((prom|grafana)\/[^ ]+).*/\1/p' docker-compose.yml); do \
	      docker image inspect "$$img" >/dev/null 2>&1 || docker pull "$$img" || { \
	        echo "up: cannot pull $$img (no registry access?)." >&2; \
	        echo "up: run api and worker alone with:  make up STACK=app" >&2; exit 1; }; \
	    done;; \
	  *) echo "up: STACK must be full or app, not '$(STACK)'" >&2; exit 1;; \
	esac; \
	TAG=$(TAG) $(COMPOSE) up -d --no-build $$services; \
	for svc in api worker; do \
	  id=$$(TAG=$(TAG) $(COMPOSE) ps -q $$svc); \
	  for i in $$(seq 1 $(UP_TIMEOUT)); do \
	    st=$$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$$id"); \
	    [ "$$st" = healthy ] && break; \
	    sleep 1; \
	  done; \
	  if [ "$$st" != healthy ]; then \
	    echo "up: $$svc is '$$st' after $(UP_TIMEOUT)s; its last log lines:" >&2; \
	    docker logs --tail 20 "$$id" >&2; exit 1; \
	  fi; \
	done; \
	host=$${BIND_ADDR:-127.0.0.1}; [ "$$host" = 0.0.0.0 ] && host=localhost; [ "$$host" = 127.0.0.1 ] && host=localhost; \
	if [ "$(STACK)" = full ]; then \
	  echo "up: checking the monitoring stack (up to $(UP_TIMEOUT)s):"; \
	  python3 monitoring/verify_stack.py --timeout $(UP_TIMEOUT) \
	    --prometheus "http://$$host:$${PROMETHEUS_PORT:-9090}" \
	    --alertmanager "http://$$host:$${ALERTMANAGER_PORT:-9093}" \
	    --grafana "http://$$host:$${GRAFANA_PORT:-3000}" || { \
	    echo "up: a check failed (above); logs: $(COMPOSE) logs prometheus alertmanager grafana" >&2; exit 1; }; \
	fi; \
	echo ""; \
	echo "Orion is up (api and worker healthy):"; \
	echo "  API         http://$$host:$${API_PORT:-8000}/        (/health /ready /metrics)"; \
	echo "  Worker      http://$$host:$${WORKER_PORT:-9091}/health  (/ready /metrics)"; \
	if [ "$(STACK)" = full ]; then \
	echo "  Prometheus  http://$$host:$${PROMETHEUS_PORT:-9090}/   (targets: /targets, alerts: /alerts)"; \
	echo "  Alertmanager http://$$host:$${ALERTMANAGER_PORT:-9093}/  (every alert; receiver keys: monitoring/alertmanager-secrets/)"; \
	echo "  Grafana     http://$$host:$${GRAFANA_PORT:-3000}/   (admin / \$$GRAFANA_ADMIN_PASSWORD, default admin)"; \
	fi; \
	echo "Stop with: make down"

down: ## stop and remove the local stack (keeps the Prometheus data volume)
	TAG=$(TAG) $(COMPOSE) down --remove-orphans

# test_release.py is make test-release's (mk/release.mk: it runs after verify-reproducible).
# The docker tests need an engine. Without one (a laptop without Docker) they say
# SKIPPED loudly; under CI=true a missing engine is a failure.
test-images: build tools ## binaries (static, arm64 under qemu) + images + compose, on the local docker engine
	@if docker info >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory images; \
	elif [ "$${CI:-}" = true ]; then \
	  echo "test-images: FAILED: no docker engine reachable and CI=true" >&2; exit 1; \
	else \
	  echo "################################################################"; \
	  echo "## test-images: NO DOCKER ENGINE: image/compose tests SKIPPED ##"; \
	  echo "################################################################"; \
	fi
	ORION_TAG=$(TAG) ORION_VERSION=$(IMAGE_VERSION) ORION_REVISION=$(IMAGE_REVISION) \
	  ORION_HOST_ARCH=$(HOST_ARCH) ORION_COMPOSE="$(COMPOSE)" \
	  $(VENV_BIN)/pytest -q -rfEs tests/images --ignore=tests/images/test_release.py

# yamllint: the default rules, with compose's customary 120 columns and no `---`.
COMPOSE_YAMLLINT := {extends: default, rules: {line-length: {max: 120}, document-start: disable}}

lint-images: tools ## hadolint Dockerfile.scratch; compose file: compose config, yamllint
	$(VENV_BIN)/hadolint Dockerfile.scratch
	TAG=$(TAG) $(COMPOSE) config -q
	$(VENV_BIN)/yamllint --strict -d '$(COMPOSE_YAMLLINT)' docker-compose.yml

bench-images: images tools ## image sizes, arm64 vs amd64 build time, cold start to healthy
	ORION_TAG=$(TAG) ORION_HOST_ARCH=$(HOST_ARCH) $(VENV_BIN)/python tests/images/bench_images.py

TEST_TARGETS  += test-images
LINT_TARGETS  += lint-images
BENCH_TARGETS += bench-images
