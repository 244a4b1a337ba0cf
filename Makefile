# Ward: `make run` starts a collector on embedded SQLite and a local agent; `make test` runs
# every test, including the ones that load real eBPF probes (as root).
SHELL := /bin/bash
GO ?= go
WARD_HOME ?= $(CURDIR)/.ward
WATCH ?=
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin
BINARIES := $(BIN)/ward-agent $(BIN)/ward-collector $(BIN)/wardctl
export CGO_ENABLED ?= 0

.PHONY: all build run test check-generated generate vmlinux bench fuzz deps clean

all: build

deps:
	@scripts/deps.sh build

build: deps
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

## run: collector on SQLite under $(WARD_HOME) + an enrolled local agent (needs root for eBPF).
run: build
	@WARD_HOME='$(WARD_HOME)' WATCH='$(WATCH)' BIN='$(BIN)' scripts/run.sh

## test: everything CI runs: generated code is fresh, vet, unit and root (real probe) tests.
test:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory check-generated
	$(GO) vet ./...
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v /tests)
	$(GO) test -count=1 -timeout 15m ./tests/...

## generate: rebuild bpf2go objects and protobuf Go from source (both are committed).
generate:
	@scripts/deps.sh generate
	$(GO) generate ./bpf/...
	@mkdir -p $(BIN)
	GOBIN=$(CURDIR)/$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	PATH="$(CURDIR)/$(BIN):$$PATH" protoc -I api --go_out=api --go_opt=paths=source_relative \
		--go-grpc_out=api --go-grpc_opt=paths=source_relative api/ward/v1/*.proto

## check-generated: fail when committed generated code differs from what `make generate` makes.
check-generated:
	@scripts/check-generated.sh

## vmlinux: refresh bpf/include/vmlinux.h from this machine's BTF (rarely needed; CO-RE relocates).
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/include/vmlinux.h

## bench: Go benchmarks for the hot paths, figures go to docs/benchmarks.md.
bench: build
	scripts/bench.sh

## fuzz: run every fuzz target for FUZZTIME each (default 30s).
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s $$pkg || exit 1; \
		done; done

clean:
	rm -rf $(BIN)

## package: .deb and .rpm for ward-agent and ward-collector into dist/ (nfpm as a Go tool,
## no network). VERSION, OUT, GOARCH and SOURCE_DATE_EPOCH override; see packaging/build.sh.
.PHONY: package
package:
	@scripts/deps.sh build
	@scripts/deps.sh package
	@OUT='$(or $(OUT),dist)' GO='$(GO)' packaging/build.sh
