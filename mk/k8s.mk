# Kubernetes manifests (k8s/): render, schema-validate, policy-test.
#
#   make test-k8s               render every overlay + the monitoring stack, kubernetes-validate
#                               --strict them (and k8s/eks-deployer-rbac.yaml), yamllint k8s/,
#                               run tests/k8s (policy, checkov over every render in one run,
#                               Prometheus SD)
#   make checkov                checkov's report of the renders (what tests/k8s/test_checkov.py checks)
#   make k8s-render             the renders into $(K8S_RENDER_DIR)/ (for reading or diffing)
#   make k8s-render-monitoring  the monitoring stack on stdout
#   make k8s-apply-monitoring   render + kubectl apply (current kube context)
#
# No cluster is needed (or used): validation is static, against the schemas bundled in the
# kubernetes-validate wheel, so it works offline.

K8S_OVERLAYS       := dev uat prod kind
K8S_RENDER_DIR     ?= $(CURDIR)/.tmp/k8s
# Oldest supported (lifecycle.preStop.sleep needs 1.30) and newest (matches the pinned kubectl).
K8S_SCHEMA_VERSIONS := 1.30.0 1.37.0
# checkov lives in its own venv: it pins packaging<24, pytest (tools/requirements.txt) >=24.
CHECKOV_VENV := $(VENV)/checkov
CHECKOV      := $(CHECKOV_VENV)/bin/checkov

.PHONY: k8s-render k8s-render-monitoring k8s-apply-monitoring k8s-validate lint-k8s test-k8s checkov checkov-tool

checkov-tool: $(CHECKOV_VENV)/.installed ## checkov in its own venv, .venv/checkov (it pins packaging<24)

$(CHECKOV_VENV)/.installed: tools/checkov-requirements.txt
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/checkov-requirements.txt
	touch $@

k8s-render: tools ## render k8s overlays and the monitoring stack into .tmp/k8s/
	@mkdir -p $(K8S_RENDER_DIR)
	@for o in $(K8S_OVERLAYS); do \
	  kubectl kustomize k8s/overlays/$$o > $(K8S_RENDER_DIR)/$$o.yaml; \
	done
	@KUBECTL=kubectl k8s/render-monitoring.sh > $(K8S_RENDER_DIR)/monitoring.yaml
	@echo "k8s-render: $(K8S_OVERLAYS) monitoring -> $(K8S_RENDER_DIR)"

k8s-render-monitoring: tools ## the monitoring stack's YAML on stdout (GRAFANA_ADMIN_PASSWORD=... to set the password)
	@KUBECTL=kubectl k8s/render-monitoring.sh

# A kind context gets the local render (admin/admin); any other context is a real cluster of
# ORION_ENV (dev by default), for which render-monitoring.sh refuses Grafana without
# GRAFANA_ADMIN_PASSWORD, and nothing is applied.
k8s-apply-monitoring: tools ## deploy Prometheus + Grafana to the current kube context (GRAFANA_ADMIN_PASSWORD=..., unless kind)
	@ctx=$$(kubectl config current-context); \
	case "$$ctx" in kind-*) target=local ;; *) target="$(ORION_ENV)" ;; esac; \
	tmp=$$(mktemp); trap 'rm -f "$$tmp"' EXIT; \
	KUBECTL=kubectl k8s/render-monitoring.sh "$$target" >"$$tmp"; \
	kubectl apply -f "$$tmp"

# k8s/eks-deployer-rbac.yaml is applied as it is (by a cluster admin, not rendered): validated too.
k8s-validate: k8s-render ## kubernetes-validate --strict every render (+ the EKS deployer's RBAC) against each pinned Kubernetes version
	@for v in $(K8S_SCHEMA_VERSIONS); do \
	  kubernetes-validate --strict --quiet --kubernetes-version $$v \
	    $(foreach o,$(K8S_OVERLAYS) monitoring,$(K8S_RENDER_DIR)/$(o).yaml) k8s/eks-deployer-rbac.yaml; \
	  echo "k8s-validate: $(K8S_OVERLAYS) monitoring eks-deployer-rbac valid (strict) for Kubernetes $$v"; \
	done

lint-k8s: tools ## yamllint the manifests
	yamllint --strict -c k8s/.yamllint.yaml k8s/

test-k8s: lint-k8s k8s-validate checkov-tool ## Kubernetes: render, schema-validate, policy tests (+ checkov)
	K8S_RENDER_DIR=$(K8S_RENDER_DIR) CHECKOV=$(CHECKOV) pytest -q tests/k8s

checkov: k8s-render checkov-tool ## checkov --framework kubernetes over every render (0 failed expected)
	$(CHECKOV) --framework kubernetes --skip-download --compact --quiet \
	  $(foreach o,$(K8S_OVERLAYS) monitoring,-f $(K8S_RENDER_DIR)/$(o).yaml)

TEST_TARGETS += test-k8s
LINT_TARGETS += lint-k8s
