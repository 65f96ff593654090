# zipship — one binary, embedded by default.
#   make run    build and start zipship serve (API :8080, sites :8081)
#   make test   every test, with real SQLite files and real HTTP servers
#   make bench  benchmarks, printed as tables with ratios
SHELL := /bin/bash
GO ?= go
BIN := bin/zipship
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
export GOFLAGS := -buildvcs=false

.PHONY: all build run test bench lint clean deps

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/zipship

# deps installs what builds run in: containerd and runc (Debian packages).
# The sandbox tests start their own containerd daemon with these binaries.
deps:
	@command -v containerd >/dev/null && command -v runc >/dev/null || { \
		echo "installing containerd and runc (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc >/dev/null; }

run: deps build
	./$(BIN) serve

test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

bench: build
	@command -v wrk >/dev/null && command -v nginx >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null; }
	$(GO) run ./bench/eventstore
	$(GO) test -run '^$$' -bench . -benchtime 3x ./projections/
	$(GO) run ./bench/upload
	$(GO) run ./bench/build
	$(GO) run ./bench/edge

lint:
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2; then \
		PATH="$$PATH:$$($(GO) env GOPATH)/bin" staticcheck ./...; \
	else echo "staticcheck not installable here; go vet only"; fi

clean:
	rm -rf bin
