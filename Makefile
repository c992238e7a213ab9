# edgehive — every CI step is a target here.
GO            ?= go
BIN           := bin
PLUGINS       := edged edgehub metamanager eventbus devicetwin servicebus
TOOLS         := $(CURDIR)/.tools/bin
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
VERSION       ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS       := -s -w -X main.version=$(VERSION)
TEST_FLAGS    ?= -race -count=1 -timeout 20m
CONTAINERD_DIR := $(CURDIR)/_output/containerd
IMAGES_DIR     := $(CURDIR)/_output/images
# Extra hack/images flags (conformance adds the agnhost image).
IMAGES_FLAGS   ?=

.PHONY: bench-pods
## bench-pods: pods from arrival to Running on the private containerd (edged)
bench-pods: build
	@rc=0; $(MAKE) --no-print-directory containerd-up || rc=$$?; \
	  if [ $$rc -eq 0 ]; then \
	    env $$(bash hack/containerd.sh env $(CONTAINERD_DIR)) $(BIN)/edgehive bench pods -count 1 || rc=$$?; \
	    env $$(bash hack/containerd.sh env $(CONTAINERD_DIR)) $(BIN)/edgehive bench pods -count 10 || rc=$$?; \
	    env $$(bash hack/containerd.sh env $(CONTAINERD_DIR)) $(BIN)/edgehive bench pods -count 50 || rc=$$?; \
	  fi; \
	  $(MAKE) --no-print-directory containerd-down || rc=$$?; exit $$rc

.PHONY: all build run test unit-test integration-test bench proto proto-check lint setup clean \
        containerd-up containerd-down test-cri e2e bench-e2e kube-binaries cloudhive conformance

all: build

## build: the host (a multi-call binary), links for the six plugins, the hello example, cloudhive
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/edgehive ./cmd/edgehive
	@mkdir -p $(BIN)/plugins
	@for p in $(PLUGINS); do ln -sf ../edgehive $(BIN)/plugins/$$p; done
	$(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/plugins/hello ./examples/plugins/hello
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/cloudhive ./cmd/cloudhive

## run: set up what is missing and run the host on the embedded default config
run: build
	$(BIN)/edgehive run

## setup: install the system packages the tests need (Debian), when missing
setup:
	@bash hack/setup.sh

## test: set up, check generated code and formatting, run every test with -race, then the CRI and e2e tests
test: setup proto-check lint build
	$(GO) test $(TEST_FLAGS) ./...
	$(MAKE) --no-print-directory test-cri
	$(MAKE) --no-print-directory e2e

## containerd-up: a private containerd in _output/containerd with the test images imported
containerd-up:
	bash hack/containerd.sh start $(CONTAINERD_DIR)
	$(GO) run ./hack/images -out $(IMAGES_DIR) -address $(CONTAINERD_DIR)/containerd.sock \
	  -snapshotter $$(cat $(CONTAINERD_DIR)/snapshotter) -nonewprivs $(IMAGES_FLAGS)

## containerd-down: stop it and unmount what it left
containerd-down:
	bash hack/containerd.sh stop $(CONTAINERD_DIR)

## test-cri: the CRI client's integration tests against the private containerd (stopped even on failure)
test-cri:
	@rc=0; \
	  $(MAKE) --no-print-directory containerd-up || rc=$$?; \
	  if [ $$rc -eq 0 ]; then \
	    env $$(bash hack/containerd.sh env $(CONTAINERD_DIR)) \
	      $(GO) test $(TEST_FLAGS) -tags containerd -v ./plugins/edged/... || rc=$$?; \
	  fi; \
	  if [ $$rc -ne 0 ] && [ -f $(CONTAINERD_DIR)/containerd.log ]; then \
	    echo "--- last lines of $(CONTAINERD_DIR)/containerd.log"; tail -20 $(CONTAINERD_DIR)/containerd.log; fi; \
	  $(MAKE) --no-print-directory containerd-down || rc=$$?; \
	  exit $$rc

## bench: the message-plane benchmarks (figures in docs/benchmarks.md)
bench: build
	$(BIN)/edgehive bench route -duration 5s -size 256
	$(BIN)/edgehive bench route -duration 5s -size 256 -rate 10000
	$(BIN)/edgehive bench restart
	$(BIN)/edgehive bench footprint

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

PROTO_OUT ?= sdk/proto

## proto: regenerate the plugin protocol's Go code
proto: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	PATH=$(TOOLS):$$PATH protoc -I sdk/proto \
	  --go_out=$(PROTO_OUT) --go_opt=paths=source_relative \
	  --go-grpc_out=$(PROTO_OUT) --go-grpc_opt=paths=source_relative \
	  plugin/v1/plugin.proto

## proto-check: fail when the committed generated code is not what `make proto` makes
proto-check: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	@tmp=$$(mktemp -d) && $(MAKE) --no-print-directory proto PROTO_OUT=$$tmp >/dev/null && \
	  if diff -r -x '*.proto' $$tmp/plugin sdk/proto/plugin >/dev/null; then echo "proto: generated code is current"; rm -rf $$tmp; \
	  else echo "proto: generated code is stale; run 'make proto'"; diff -r -x '*.proto' $$tmp/plugin sdk/proto/plugin | head -20; rm -rf $$tmp; exit 1; fi

## lint: gofmt and go vet
lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*')); \
	  if [ -n "$$bad" ]; then echo "gofmt would change:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags containerd ./plugins/edged/cri/
	$(GO) vet -tags e2e ./internal/e2eenv/ ./test/e2e/...

clean:
	rm -rf $(BIN) .tools
	@if [ -f $(CONTAINERD_DIR)/containerd.pid ]; then bash hack/containerd.sh stop $(CONTAINERD_DIR); fi
	rm -rf _output

E2E_FLAGS ?= -count=1 -timeout 30m
# Kubernetes server binaries for the e2e tests, cached outside the repo.
KUBE_BIN_DIR = $(shell bash hack/kube.sh dir)

## kube-binaries: build kube-apiserver and kubectl from the Go module proxy into the cache (hack/kube.sh), once
kube-binaries:
	bash hack/kube.sh kube-apiserver kubectl

## cloudhive: the cloud half
cloudhive:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/cloudhive ./cmd/cloudhive

## e2e: etcd + kube-apiserver + cloudhive + edgehive + the private containerd, behind the guard rails (stopped even on failure)
e2e: setup build cloudhive kube-binaries
	@rc=0; \
	  $(MAKE) --no-print-directory containerd-up || rc=$$?; \
	  if [ $$rc -eq 0 ]; then \
	    env $$(bash hack/containerd.sh env $(CONTAINERD_DIR)) KUBE_BIN_DIR=$(KUBE_BIN_DIR) EDGEHIVE_BIN=$(CURDIR)/$(BIN) \
	      $(GO) test $(E2E_FLAGS) -tags e2e -v ./internal/e2eenv/ ./test/e2e/ || rc=$$?; \
	  fi; \
	  if [ $$rc -ne 0 ] && [ -f $(CONTAINERD_DIR)/containerd.log ]; then \
	    echo "--- last lines of $(CONTAINERD_DIR)/containerd.log"; tail -20 $(CONTAINERD_DIR)/containerd.log; fi; \
	  $(MAKE) --no-print-directory containerd-down || rc=$$?; \
	  exit $$rc

## bench-e2e: the cloud-link benchmarks (seq, burst, delete, node_ready) on the e2e environment, one JSON object per line
bench-e2e: setup build cloudhive kube-binaries
	@rc=0; \
	  $(MAKE) --no-print-directory containerd-up || rc=$$?; \
	  if [ $$rc -eq 0 ]; then \
	    env $$(bash hack/containerd.sh env $(CONTAINERD_DIR)) KUBE_BIN_DIR=$(KUBE_BIN_DIR) EDGEHIVE_BIN=$(CURDIR)/$(BIN) \
	      $(GO) test $(E2E_FLAGS) -tags e2e -run '^TestBenchE2E$$' ./test/e2e/bench/ -args -bench.out=$(CURDIR)/_output/bench-e2e.jsonl || rc=$$?; \
	    [ -f _output/bench-e2e.jsonl ] && cat _output/bench-e2e.jsonl; \
	  fi; \
	  $(MAKE) --no-print-directory containerd-down || rc=$$?; \
	  exit $$rc

CONFORMANCE_DIR   ?= $(CURDIR)/_output/conformance
CONFORMANCE_FLAGS ?=
# A narrower ginkgo focus, e.g. make conformance CONFORMANCE_FOCUS='Pods should get a host IP'
CONFORMANCE_FOCUS ?=
## conformance: the upstream [sig-node]/[sig-storage] conformance tests against an edgehive-only cluster (~1 h; not in `make test`); reports in _output/conformance
conformance: setup build cloudhive
	bash hack/kube.sh kube-apiserver kube-scheduler kube-controller-manager e2e.test agnhost ginkgo
	@rc=0; \
	  $(MAKE) --no-print-directory containerd-up IMAGES_FLAGS="-agnhost $(KUBE_BIN_DIR)/agnhost -sh /bin/bash-static" || rc=$$?; \
	  if [ $$rc -eq 0 ]; then \
	    env $$(bash hack/containerd.sh env $(CONTAINERD_DIR)) KUBE_BIN_DIR=$(KUBE_BIN_DIR) EDGEHIVE_BIN=$(CURDIR)/$(BIN) \
	      $(GO) test -count=1 -timeout 130m -tags 'e2e conformance' -v ./test/conformance/ \
	      -args -conformance.report-dir=$(CONFORMANCE_DIR) \
	      $(if $(CONFORMANCE_FOCUS),'-conformance.focus=$(CONFORMANCE_FOCUS)') $(CONFORMANCE_FLAGS) || rc=$$?; \
	    [ -f $(CONFORMANCE_DIR)/summary.txt ] && grep -v '^PASS ' $(CONFORMANCE_DIR)/summary.txt; \
	  fi; \
	  $(MAKE) --no-print-directory containerd-down || rc=$$?; \
	  exit $$rc
