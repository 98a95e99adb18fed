# TagCache Cluster. `make help` lists the targets.
GO        ?= go
BIN       := bin/tagcache
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
FUZZTIME  ?= 20s
BENCHTIME ?= 1s

.PHONY: help build run test race fuzz bench bench-compare lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/tagcache
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/tagcache

run: build ## run a single node on the embedded defaults (127.0.0.1, text 1984, HTTP 8080)
	./$(BIN) server

test: ## every test that needs no root and no network beyond loopback
	$(GO) test -count=1 ./...

race: ## the tests under the race detector
	$(GO) test -count=1 -race ./...

fuzz: ## each fuzz target for FUZZTIME (default 20s)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

bench: ## the benchmarks (BENCHTIME per benchmark, default 1s)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

bench-compare: ## TagCache vs redis-server side by side (installs Debian's redis-server if missing)
	bash bench/compare.sh

lint: ## gofmt, go vet and go mod tidy must leave nothing to change
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@cp go.mod /tmp/tagcache-go.mod.bak; cp go.sum /tmp/tagcache-go.sum.bak; \
	  $(GO) mod tidy; \
	  if ! git diff --quiet -- go.mod go.sum 2>/dev/null; then \
	    echo "go mod tidy changes go.mod/go.sum: run it and commit"; \
	    cp /tmp/tagcache-go.mod.bak go.mod; cp /tmp/tagcache-go.sum.bak go.sum; exit 1; fi

clean: ## remove build output
	rm -rf bin
