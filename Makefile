# cellos-operator. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

BIN := $(CURDIR)/bin
GO ?= go

# Binaries from the pinned tools modules are rebuilt only when missing or when
# their pins (go.mod and go.sum) change: each depends on a stamp named by the
# pins' hash, which a change of pins makes anew.
CONTROLPLANE_PINS := $(BIN)/.controlplane-$(shell cat hack/tools/go.mod hack/tools/go.sum | sha256sum | cut -c1-12)
DEVTOOLS_PINS := $(BIN)/.devtools-$(shell cat hack/devtools/go.mod hack/devtools/go.sum | sha256sum | cut -c1-12)
HELM_PINS := $(BIN)/.helm-$(shell cat hack/helm/go.mod hack/helm/go.sum | sha256sum | cut -c1-12)

CONTROLLER_GEN := $(BIN)/controller-gen
GOLANGCI_LINT := $(BIN)/golangci-lint
KUBECTL := $(BIN)/kubectl
CONTROLPLANE := $(BIN)/kube-apiserver $(BIN)/etcd $(KUBECTL)
DEVTOOLS := $(CONTROLLER_GEN) $(GOLANGCI_LINT)
HELM := $(BIN)/helm

# The chart and the values files CI renders it with.
CHART := charts/cellos-operator
CHART_VALUES := $(wildcard $(CHART)/ci/*-values.yaml)

# kubectl for the targets that talk to a cluster: the one on PATH, else
# kubectl alone built into bin/ (not the whole control plane).
CLUSTER_KUBECTL ?= $(or $(shell command -v kubectl 2>/dev/null),$(KUBECTL))

# envtest finds kube-apiserver, etcd and kubectl here.
export KUBEBUILDER_ASSETS := $(BIN)

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: $(DEVTOOLS) ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: $(DEVTOOLS) ## Generate the CRDs and RBAC from markers, and the chart's copies of them.
	$(CONTROLLER_GEN) crd rbac:roleName=manager-role paths=./... output:crd:artifacts:config=config/crd/bases
	$(GO) run ./hack/chartgen -config config -chart $(CHART)

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: verify
verify: generate manifests $(CONTROLPLANE) $(HELM) ## Regenerate everything and fail if the tree is not clean.
	$(BIN)/kubectl kustomize config/default > /dev/null
	$(HELM) lint --strict $(CHART) $(foreach f,$(CHART_VALUES),&& $(HELM) lint --strict --quiet $(CHART) -f $(f))
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt wants changes in:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) mod tidy -diff
	cd hack/tools && $(GO) mod tidy -diff
	cd hack/devtools && $(GO) mod tidy -diff
	cd hack/helm && $(GO) mod tidy -diff
	cd config/argocd && $(GO) mod tidy -diff
	@git diff --exit-code -- . || { echo "Generated files are stale: run 'make generate manifests' and commit."; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- api config $(CHART))" || { echo "Untracked generated files:"; git status --porcelain --untracked-files=all -- api config $(CHART); exit 1; }

.PHONY: lint
lint: $(DEVTOOLS) ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...
	cd config/argocd && $(GOLANGCI_LINT) run ./...

.PHONY: test
test: manifests generate $(CONTROLPLANE) $(HELM) ## Run all tests: unit, envtest, the end-to-end and small reliability suites, and fuzzing.
	cd config/argocd && $(GO) test ./... -count=1 -race
	$(GO) test ./... -count=1 -race -timeout 30m
	$(MAKE) --no-print-directory fuzz

# The fast loop leaves out the two suites that run the operator as a process
# and take minutes each.
.PHONY: test-unit
test-unit: manifests generate $(CONTROLPLANE) ## The fast loop: every package but test/e2e and test/reliability (pure code, and envtest with an embedded JetStream).
	cd config/argocd && $(GO) test ./... -count=1 -race
	$(GO) test $$($(GO) list ./... | grep -v -e '/test/e2e$$' -e '/test/reliability$$') -count=1 -race -timeout 10m

.PHONY: test-reliability
test-reliability: manifests generate $(CONTROLPLANE) ## Run the full reliability suite (about 30 minutes): crashes, outages, poison input, stream gaps, failover, overload. Its figures go to bin/reliability-report.md.
	RELIABILITY_SCALE=full RELIABILITY_REPORT=$(BIN)/reliability-report.md $(GO) test ./test/reliability -count=1 -v -timeout 4h

FUZZTIME ?= 20s
.PHONY: fuzz
fuzz: ## Fuzz decode plus fold over whole streams for FUZZTIME (20s).
	$(GO) test ./internal/fold -run '^$$' -fuzz '^FuzzFoldStream$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s

.PHONY: test-chart
test-chart: manifests $(CONTROLPLANE) $(HELM) ## Run the chart's tests alone: lint, render each ci/ values file, apply it, and run the manager with its RBAC.
	$(HELM) lint --strict $(CHART) $(foreach f,$(CHART_VALUES),&& $(HELM) lint --strict --quiet $(CHART) -f $(f))
	$(GO) test ./test/e2e -run 'Chart|Kustomize' -count=1 -race -v -timeout 10m

.PHONY: bench
# The harness ends by 25 minutes after make starts, building included: a
# first build of the tools leaves less time to its largest points.
bench: BENCH_DEADLINE := $(shell echo $$(( $$(date +%s) + 1500 )))
bench: build $(CONTROLPLANE) ## Run the Go benchmarks, then cellos-bench: the operator, a naive projector and the ceiling, one table, and the soak (docs/performance.md).
	@mkdir -p $(BIN)/bench
	$(GO) test ./... -run '^$$' -bench . -benchmem -count=1 | tee $(BIN)/bench/gobench.txt
	$(GO) run ./hack/cellos-bench -manager $(BIN)/manager -deadline $(BENCH_DEADLINE) -gobench $(BIN)/bench/gobench.txt -json $(BIN)/bench/results.json | tee $(BIN)/bench/table.md
	cd hack/plot && $(GO) run . -in $(BIN)/bench/results.json -out $(BIN)/bench/performance.png -soak-out $(BIN)/bench/soak.png

##@ Build

.PHONY: build
build: ## Build the operator into bin/manager.
	$(GO) build -o $(BIN)/manager ./cmd/manager

.PHONY: dev
dev: manifests build $(CONTROLPLANE) ## Run a local playground: control plane, JetStream, the operator and a simulated supervisor.
	$(GO) build -o $(BIN)/cellos-dev ./hack/cellos-dev
	$(BIN)/cellos-dev --manager $(BIN)/manager --kubectl $(BIN)/kubectl --state-dir $(CURDIR)/.dev

.PHONY: sim
sim: ## Build the cellos-sim event simulator into bin/cellos-sim.
	$(GO) build -o $(BIN)/cellos-sim ./hack/cellos-sim

.PHONY: run
run: manifests ## Run the operator against the current kubeconfig and NATS_URL.
	$(GO) run ./cmd/manager

IMG ?= cellos-operator:latest
# The platforms docker-buildx builds for.
PLATFORMS ?= linux/amd64,linux/arm64

.PHONY: docker-build
docker-build: ## Build the operator's image for this machine's platform (needs a Docker engine).
	docker build -t $(IMG) .

.PHONY: docker-buildx
docker-buildx: ## Build and push a multi-platform image of IMG for PLATFORMS (needs Docker with buildx).
	docker buildx inspect cellos-operator-builder >/dev/null 2>&1 || docker buildx create --name cellos-operator-builder
	docker buildx build --builder cellos-operator-builder --platform $(PLATFORMS) --tag $(IMG) --push .

##@ Deployment

# dist/overlay is config/default with the image set to IMG, through
# kustomize's images:, so that nothing under config/ is edited.
.PHONY: dist/overlay
dist/overlay:
	@mkdir -p $@
	@img='$(IMG)'; name="$$img"; tag=latest; digest=; \
	case "$$img" in *@*) name="$${img%@*}"; digest="$${img#*@}";; esac; \
	case "$${name##*/}" in *:*) tag="$${name##*:}"; name="$${name%:*}";; esac; \
	{ echo "# Written by make from IMG=$(IMG); not committed."; \
	  echo "resources:"; echo "- ../../config/default"; \
	  echo "images:"; echo "- name: cellos-operator"; echo "  newName: $$name"; \
	  if [ -n "$$digest" ]; then echo "  digest: $$digest"; else echo "  newTag: $$tag"; fi; } > $@/kustomization.yaml

.PHONY: install
install: $(CLUSTER_KUBECTL) ## Install the CRDs into the cluster of the current kubeconfig (needs only kubectl).
	$(CLUSTER_KUBECTL) apply --server-side -f config/crd/bases

.PHONY: uninstall
uninstall: $(CLUSTER_KUBECTL) ## Delete the CRDs, and with them every Formation and Cell.
	$(CLUSTER_KUBECTL) delete --ignore-not-found -f config/crd/bases

.PHONY: deploy
deploy: dist/overlay $(CLUSTER_KUBECTL) ## Install the operator from config/default with image IMG into the current cluster.
	$(CLUSTER_KUBECTL) apply --server-side -k dist/overlay

.PHONY: undeploy
undeploy: dist/overlay $(CLUSTER_KUBECTL) ## Remove what deploy installed, the CRDs (and so every Formation and Cell) included.
	$(CLUSTER_KUBECTL) delete --ignore-not-found -k dist/overlay

.PHONY: build-installer
build-installer: dist/overlay $(CLUSTER_KUBECTL) ## Write dist/install.yaml: config/default with image IMG, one file to kubectl apply.
	$(CLUSTER_KUBECTL) kustomize dist/overlay > dist/install.yaml
	@echo "Wrote dist/install.yaml for image $(IMG)"

.PHONY: tools
tools: $(CONTROLPLANE) $(DEVTOOLS) $(HELM) ## Build the pinned tools into bin/.

$(CONTROLPLANE_PINS):
	@mkdir -p $(BIN)
	rm -f $(BIN)/.controlplane-*
	touch $@

$(DEVTOOLS_PINS):
	@mkdir -p $(BIN)
	rm -f $(BIN)/.devtools-*
	touch $@

$(HELM_PINS):
	@mkdir -p $(BIN)
	rm -f $(BIN)/.helm-*
	touch $@

$(BIN)/kube-apiserver: $(CONTROLPLANE_PINS)
	@echo "Building kube-apiserver from hack/tools (the first time takes minutes)"
	cd hack/tools && $(GO) build -o $@ k8s.io/kubernetes/cmd/kube-apiserver

$(BIN)/etcd: $(CONTROLPLANE_PINS)
	cd hack/tools && $(GO) build -o $@ go.etcd.io/etcd/server/v3

$(KUBECTL): $(CONTROLPLANE_PINS)
	cd hack/tools && $(GO) build -o $@ k8s.io/kubernetes/cmd/kubectl

$(CONTROLLER_GEN): $(DEVTOOLS_PINS)
	cd hack/devtools && $(GO) build -o $@ sigs.k8s.io/controller-tools/cmd/controller-gen

$(GOLANGCI_LINT): $(DEVTOOLS_PINS)
	cd hack/devtools && $(GO) build -o $@ github.com/golangci/golangci-lint/v2/cmd/golangci-lint

$(HELM): $(HELM_PINS)
	@echo "Building helm from hack/helm (the first time takes a few minutes)"
	cd hack/helm && $(GO) build -o $@ helm.sh/helm/v4/cmd/helm
