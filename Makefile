# refractor: build, run and test.
#
#   make run     build Caddy with refractor (./caddy) and run Caddyfile.example
#   make test    gofmt check, go vet, then go test -race ./...
#   make lint    go vet and staticcheck
#   make build   only build ./caddy
#   make clean   remove build and coverage output
#   make bench   refractor vs reverse_proxy vs direct over simulated mirrors
#                (BENCHMARKS.md; about 25 minutes; BENCH_FLAGS=-quick for 1)
#   make demo    Caddy with refractor over simulated mirrors, and a client
#
# Developer tools (xcaddy, staticcheck) are pinned in tools/go.mod and run
# with `go tool -modfile=tools/go.mod ...`; nothing needs to be installed.

GO    ?= go
GOFMT ?= $(shell $(GO) env GOROOT)/bin/gofmt
TOOL  := $(GO) tool -modfile=tools/go.mod

CADDY_VERSION ?= v2.11.9
MODULE        := github.com/caddy-refractor/refractor

# xcaddy resolves this module through its local replace (=.), but the
# module proxy answers 403 for a module it does not know, and with the
# default "proxy,direct" the go command then tries to fetch it from
# GitHub. "|off" falls through to the replace instead.
XCADDY_GOPROXY ?= $(shell $(GO) env GOPROXY | cut -d, -f1)|off

# -race needs cgo, hence a C compiler (gcc). Without one, tests still run,
# without the race detector, and say so. .ci/run always sets RACE=-race.
RACE ?= $(if $(filter 1,$(shell $(GO) env CGO_ENABLED)),-race)
TEST_TIMEOUT ?= 20m

# Rebuild ./caddy only when a Go source, a go.mod or this Makefile changed.
SOURCES := $(shell find . -name '*.go' -not -path './tools/*') go.mod go.sum tools/go.mod Makefile

.PHONY: build run test fmt-check vet lint clean bench demo

build: caddy

caddy: $(SOURCES)
	GOPROXY='$(XCADDY_GOPROXY)' $(TOOL) xcaddy build $(CADDY_VERSION) \
		--with $(MODULE)=. \
		--output ./caddy

run: build
	./caddy run --config Caddyfile.example --adapter caddyfile

test: fmt-check vet
ifeq ($(RACE),)
	@echo 'warning: no cgo (C compiler), running tests without -race' >&2
endif
	$(GO) test $(RACE) -timeout $(TEST_TIMEOUT) ./...

fmt-check:
	@files="$$($(GOFMT) -l .)"; \
	if [ -n "$$files" ]; then \
		echo 'gofmt: these files need formatting (run gofmt -w):' >&2; \
		echo "$$files" >&2; \
		exit 1; \
	fi

vet:
	$(GO) vet ./...

lint: vet
	$(TOOL) staticcheck ./...

clean:
	rm -f caddy coverage.out coverage.html *.coverprofile

# The benchmark is not a test: it reports, it never fails on time.
BENCH_FLAGS ?=
bench:
	$(GO) run ./cmd/refractor-bench $(BENCH_FLAGS)

demo: build
	GO='$(GO)' ./scripts/demo.sh
