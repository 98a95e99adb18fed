# TagCache Cluster. `make help` lists the targets.
GO        ?= go
BIN       := bin/tagcache
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
FUZZTIME  ?= 20s# a duration (20s) or a count of executions (20000x)
BENCHTIME ?= 1s

.PHONY: help build run test race fuzz bench bench-compare lint clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/tagcache
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/tagcache

run: build ## run a single node on the embedded defaults (127.0.0.1, text 1984, HTTP 8080)
	./$(BIN) server

test: ## every test that needs no root and no network beyond loopback
	$(GO) test -count=1 ./...

race: ## the tests under the race detector
	$(GO) test -count=1 -race ./...

fuzz: ## each fuzz target for FUZZTIME (default 20s; CI uses a count, see .ci/run)
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

# deploy/: the Helm chart, the container image and the systemd unit.
IMAGE ?= ghcr.io/tagcache/tagcache

.PHONY: chart-test image

chart-test: build ## deploy/: helm lint + template (pinned Helm), strict Kubernetes types, the chart's args on a real node
	cd deploy/tools && $(GO) mod tidy -diff && $(GO) vet ./... && \
	  TAGCACHE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 ./...

image: ## the container image from deploy/Dockerfile (needs a Docker engine)
	docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) .

# cluster-tests/: the multi-process harness, its fault scenarios and a local cluster for
# people. The suite starts real processes, so `make test` skips it (TAGCACHE_CLUSTER_TESTS
# turns it on); the partition scenario needs root and nft, and says why it skips otherwise.
# N nodes for cluster-up, node i on ports BASE_PORT+10i…+4; logs and state in CLUSTER_DIR;
# DURATION of cluster-test-long in s, m or h (90s, 10m, 2h).
N            ?= 3
BASE_PORT    ?= 20000
CLUSTER_DIR  ?= .cluster
DURATION     ?= 10m
LOCALCLUSTER := bin/localcluster

.PHONY: cluster-test cluster-test-long cluster-up cluster-status cluster-down FORCE

# CLUSTER_RUN selects the tests (a go test -run pattern): all of them by default.
CLUSTER_RUN  ?= Harness|Scenario

cluster-test: build ## the fault scenarios on a local 3-node cluster (a few minutes; logs in CLUSTER_DIR/test-logs)
	@mkdir -p $(CLUSTER_DIR) && echo '*' > $(CLUSTER_DIR)/.gitignore
	TAGCACHE_CLUSTER_TESTS=1 TAGCACHE_CLUSTER_BINARY=$(CURDIR)/$(BIN) TAGCACHE_CLUSTER_LOGS=$(CURDIR)/$(CLUSTER_DIR)/test-logs \
	  $(GO) test -count=1 -v -timeout 15m -run '$(CLUSTER_RUN)' ./cluster-tests/

cluster-test-long: build ## 5 nodes, random faults for DURATION (default 10m), every round checked
	@mkdir -p $(CLUSTER_DIR) && echo '*' > $(CLUSTER_DIR)/.gitignore
	@secs=$$(echo '$(DURATION)' | awk '/h$$/{print $$0*3600; next} /m$$/{print $$0*60; next} {print $$0+0}'); \
	  if [ "$$secs" -le 0 ]; then echo "DURATION=$(DURATION): want e.g. 90s, 10m or 2h"; exit 2; fi; \
	  set -x; TAGCACHE_CLUSTER_TESTS=1 TAGCACHE_CLUSTER_SOAK=$(DURATION) TAGCACHE_CLUSTER_BINARY=$(CURDIR)/$(BIN) \
	  TAGCACHE_CLUSTER_LOGS=$(CURDIR)/$(CLUSTER_DIR)/test-logs \
	  $(GO) test -count=1 -v -timeout $$((secs + 900))s -run 'TestSoak' ./cluster-tests/

$(LOCALCLUSTER): FORCE
	CGO_ENABLED=0 $(GO) build -o $(LOCALCLUSTER) ./cluster-tests/cmd/localcluster

FORCE:

cluster-up: build $(LOCALCLUSTER) ## start a cluster of N nodes (default 3) on loopback in the background; prints its addresses
	@./$(LOCALCLUSTER) up -n $(N) -dir $(CLUSTER_DIR) -binary $(BIN) -base-port $(BASE_PORT)

cluster-status: ## show the nodes of the cluster started by cluster-up
	@test -x $(LOCALCLUSTER) || $(MAKE) --no-print-directory $(LOCALCLUSTER)
	@./$(LOCALCLUSTER) status -dir $(CLUSTER_DIR)

# The dashboard end to end (cluster-tests/dashboard_e2e_test.go): Debian's chromium,
# headless, driven by chromedp, against a 3-node cluster on free loopback ports.
E2E_DIR ?= $(CLUSTER_DIR)/e2e-artifacts

.PHONY: e2e

e2e: build ## the dashboard in headless Chromium against a local 3-node cluster (under a minute); screenshots in E2E_DIR
	@command -v chromium >/dev/null || { echo "make e2e needs Debian's chromium: apt-get install -y chromium"; exit 1; }
	@mkdir -p $(CLUSTER_DIR) && echo '*' > $(CLUSTER_DIR)/.gitignore
	rm -rf $(E2E_DIR)
	TAGCACHE_CLUSTER_TESTS=1 TAGCACHE_CLUSTER_BINARY=$(CURDIR)/$(BIN) TAGCACHE_CLUSTER_LOGS=$(CURDIR)/$(CLUSTER_DIR)/test-logs \
	  TAGCACHE_E2E_ARTIFACTS=$(CURDIR)/$(E2E_DIR) $(GO) test -count=1 -v -timeout 5m -run '^TestDashboardEndToEnd$$' ./cluster-tests/

cluster-down: ## stop the cluster started by cluster-up (its logs stay in CLUSTER_DIR)
	@test -x $(LOCALCLUSTER) || $(MAKE) --no-print-directory $(LOCALCLUSTER)
	@./$(LOCALCLUSTER) down -dir $(CLUSTER_DIR)
