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

CONTROLLER_GEN := $(BIN)/controller-gen
GOLANGCI_LINT := $(BIN)/golangci-lint
KUBECTL := $(BIN)/kubectl
CONTROLPLANE := $(BIN)/kube-apiserver $(BIN)/etcd $(KUBECTL)
DEVTOOLS := $(CONTROLLER_GEN) $(GOLANGCI_LINT)

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
manifests: $(DEVTOOLS) ## Generate the CRDs and RBAC from markers.
	$(CONTROLLER_GEN) crd rbac:roleName=manager-role paths=./... output:crd:artifacts:config=config/crd/bases

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: verify
verify: generate manifests $(CONTROLPLANE) ## Regenerate everything and fail if the tree is not clean.
	$(BIN)/kubectl kustomize config/default > /dev/null
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt wants changes in:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) mod tidy -diff
	cd hack/tools && $(GO) mod tidy -diff
	cd hack/devtools && $(GO) mod tidy -diff
	@git diff --exit-code -- . || { echo "Generated files are stale: run 'make generate manifests' and commit."; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- api config)" || { echo "Untracked generated files:"; git status --porcelain -- api config; exit 1; }

.PHONY: lint
lint: $(DEVTOOLS) ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: test
test: manifests generate $(CONTROLPLANE) ## Run all tests: unit, and integration against a real kube-apiserver, etcd and JetStream.
	$(GO) test ./... -count=1 -race -timeout 30m

.PHONY: bench
bench: ## Run the benchmarks and print their figures.
	$(GO) test ./... -run '^$$' -bench . -benchmem -count=1

##@ Build

.PHONY: build
build: ## Build the operator into bin/manager.
	$(GO) build -o $(BIN)/manager ./cmd/manager

.PHONY: dev
dev: manifests build $(CONTROLPLANE) ## Run a local playground: control plane, JetStream, the operator and a simulated supervisor.
	$(GO) build -o $(BIN)/cellos-dev ./cmd/cellos-dev
	$(BIN)/cellos-dev --manager $(BIN)/manager --kubectl $(BIN)/kubectl --state-dir $(CURDIR)/.dev

.PHONY: sim
sim: ## Build the cellos-sim event simulator into bin/cellos-sim.
	$(GO) build -o $(BIN)/cellos-sim ./cmd/cellos-sim

.PHONY: run
run: manifests ## Run the operator against the current kubeconfig and NATS_URL.
	$(GO) run ./cmd/manager

IMG ?= cellos-operator:latest

.PHONY: docker-build
docker-build: ## Build the operator's image (needs a Docker engine).
	docker build -t $(IMG) .

.PHONY: install
install: manifests $(CONTROLPLANE) ## Install the CRDs into the cluster of the current kubeconfig.
	$(BIN)/kubectl apply --server-side -f config/crd/bases

.PHONY: tools
tools: $(CONTROLPLANE) $(DEVTOOLS) ## Build the pinned tools into bin/.

$(CONTROLPLANE_PINS):
	@mkdir -p $(BIN)
	rm -f $(BIN)/.controlplane-*
	touch $@

$(DEVTOOLS_PINS):
	@mkdir -p $(BIN)
	rm -f $(BIN)/.devtools-*
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
