# Scratch images, the local docker compose stack, and their tests.
#
#   make images            orion-api:$(TAG), orion-worker:$(TAG) for this machine's architecture
#   make up [STACK=app]    checks first (scripts/up-preflight.sh: the prerequisites, that Docker
#                          answers and, full stack, that the upstream images are here or
#                          pullable; without a registry it stops within seconds naming
#                          STACK=app), then images + compose up; waits for health, then (full
#                          stack) checks Prometheus, Alertmanager and Grafana
#                          (monitoring/verify_stack.py, one line per check) and prints the URLs
#   make down              stop and remove the stack (the Prometheus volume is kept)
#
# The local images come from the same Dockerfile.scratch and the same binaries as the release
# index (mk/release.mk), built another way: `make build-host` (cargo auditable, this machine's
# musl target only), then scripts/local-image.py writes a docker-archive (the Dockerfile's
# metadata, the binary at /orion, timestamps from the commit) and `docker load` reads it. Only
# the docker CLI talks to the engine, and it negotiates the API version: no skopeo
# `docker-daemon:` (Docker >= 25 refuses Debian 12's skopeo, Docker 29 Ubuntu 24.04's:
# skopeo#2202, #2802), no buildah, no BuildKit or buildx, no privileged container.

# service:port it EXPOSEs (api serves metrics on its own port; worker on 9091).
IMAGE_SERVICES := api:8000 worker:9091
IMAGE_VERSION  := $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
IMAGE_REVISION  = $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# The image's timestamps: the commit's time, as in the release build (never the clock).
IMAGE_EPOCH     = $(or $(SOURCE_DATE_EPOCH),$(shell git log -1 --format=%ct HEAD 2>/dev/null),0)
LOCAL_IMAGES_TAR := .tmp/images/orion-local.tar
# Compose v2 plugin when present, the v1 `docker-compose` binary otherwise.
COMPOSE = $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)
# full = api, worker, prometheus, alertmanager, grafana; app = api and worker only (no image pulls).
STACK ?= full
UP_TIMEOUT ?= 60
# Seconds a pull of an upstream image may go without any sign of a registry (full stack).
UP_PULL_TIMEOUT ?= 20
PREFLIGHT = MAKE_VERSION=$(MAKE_VERSION) UP_PULL_TIMEOUT=$(UP_PULL_TIMEOUT) scripts/up-preflight.sh

.PHONY: images up down test-images lint-images bench-images bench-up

images: ## orion-api:$(TAG), orion-worker:$(TAG) for this machine's architecture (build-host, then docker load)
	@[ -n "$(PREFLIGHT_DONE)" ] || $(PREFLIGHT) tools docker
	@$(MAKE) --no-print-directory build-host
	@python3 scripts/local-image.py --arch $(HOST_ARCH) --created $(IMAGE_EPOCH) --out $(LOCAL_IMAGES_TAR) \
	  --build-arg VERSION=$(IMAGE_VERSION) --build-arg REVISION=$(IMAGE_REVISION) \
	  $(foreach p,$(IMAGE_SERVICES),--image $(p)=orion-$(firstword $(subst :, ,$(p))):$(TAG)) >/dev/null
	@docker load --input $(LOCAL_IMAGES_TAR) | sed 's/^/images: /'
	@rm -f $(LOCAL_IMAGES_TAR)
	@docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}' --filter 'reference=orion-*:$(TAG)'

up: ## run the stack (api, worker, Prometheus, Alertmanager, Grafana); STACK=app for api+worker only
	@case "$(STACK)" in app|full) ;; *) echo "up: STACK must be full or app, not '$(STACK)'" >&2; exit 2;; esac
	@if [ "$(STACK)" = full ]; then \
	  for f in monitoring/prometheus.yml monitoring/alerts.yaml monitoring/slo.yaml monitoring/alertmanager.yml monitoring/alertmanager-secrets \
	           monitoring/grafana/provisioning/datasources monitoring/grafana/provisioning/dashboards monitoring/grafana/dashboards; do \
	    [ -e "$$f" ] || { echo "up: $$f is missing (docker would create an empty directory in its place)" >&2; exit 1; }; \
	  done; \
	fi
	@$(PREFLIGHT) tools docker $(if $(filter full,$(STACK)),upstream)
	@$(MAKE) --no-print-directory images PREFLIGHT_DONE=1
	@services=""; [ "$(STACK)" = full ] || services="api worker"; \
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

lint-images: tools ## hadolint Dockerfile.scratch; compose file: compose config, yamllint; shellcheck up-preflight.sh
	$(VENV_BIN)/hadolint Dockerfile.scratch
	$(VENV_BIN)/shellcheck --severity=style scripts/up-preflight.sh
	TAG=$(TAG) $(COMPOSE) config -q
	$(VENV_BIN)/yamllint --strict -d '$(COMPOSE_YAMLLINT)' docker-compose.yml

bench-images: images tools ## image sizes, arm64 vs amd64 build time, cold start to healthy
	ORION_TAG=$(TAG) ORION_HOST_ARCH=$(HOST_ARCH) $(VENV_BIN)/python tests/images/bench_images.py

bench-up: tools ## fresh clone -> `make up STACK=app` healthy, a warm re-run, the full stack's early stop without a registry
	$(VENV_BIN)/python tests/images/bench_up.py

TEST_TARGETS  += test-images
LINT_TARGETS  += lint-images
BENCH_TARGETS += bench-images bench-up
