# The two entry points of the README are `make run` and `make test`.
# buf, tsc and vitest come from node_modules: nothing is fetched but npm packages.
SHELL := /bin/bash
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

DOMAIN ?= localhost
LISTEN ?= 127.0.0.1:8443
DATA_DIR ?= data
DEV_DIR ?= .dev

.PHONY: install generate lint typecheck build certs run test test-mongo soak bench fuzz clean

# npm ci only when the lock file changed since the last install.
node_modules/.install-stamp: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

install: node_modules/.install-stamp

# Each step runs only when its inputs changed (stamps in dist/), so a warm
# `make run` goes straight to starting the server.
PROTO := $(shell find proto -name '*.proto' 2>/dev/null)
SOURCES := $(shell find src gen test bench -name '*.ts' 2>/dev/null) tsconfig.json

generate: dist/.generate-stamp

dist/.generate-stamp: node_modules/.install-stamp $(PROTO) buf.gen.yaml buf.yaml
	buf generate
	@mkdir -p dist && touch $@

lint: install
	buf lint
	@if git rev-parse --verify -q main >/dev/null; then buf breaking --against '.git#branch=main'; fi

typecheck: install
	tsc -p . --noEmit

build: dist/.build-stamp

# tsc overwrites what it emits; `make clean` also drops outputs of deleted sources.
dist/.build-stamp: node_modules/.install-stamp dist/.generate-stamp $(SOURCES)
	tsc -p .
	@touch $@

# Development TLS material: a local CA and a certificate for $(DOMAIN), made once.
certs: $(DEV_DIR)/$(DOMAIN)/cert.pem

$(DEV_DIR)/$(DOMAIN)/cert.pem: | dist/.build-stamp
	node dist/src/cli/main.js dev-certs --out $(DEV_DIR) --domain $(DOMAIN)

# A local trial: --open-registration (development mode, logged as a warning) lets
# clients register without a provider credential; every other limit stays on.
run: build certs
	node dist/src/cli/main.js serve --domain $(DOMAIN) --listen $(LISTEN) --data-dir $(DATA_DIR) \
	  --tls-cert $(DEV_DIR)/$(DOMAIN)/cert.pem --tls-key $(DEV_DIR)/$(DOMAIN)/key.pem --tls-ca $(DEV_DIR)/ca.pem \
	  --open-registration

test: install lint typecheck
	vitest run

test-mongo: install
	@test -n "$$MONGODB_URI" || { echo "set MONGODB_URI (a replica set) to run the MongoDB suite"; exit 2; }
	vitest run test/store test/e2e/mongo-instances.test.ts

# The fault simulation for as long as you like (CI runs a fixed budget in test/sim):
# make soak SEED=7 STEPS=2000, SEEDS=1-20, SERVE_ARGS='--max-cached-groups 1', PROGRESS=1.
SEED ?=
STEPS ?= 500
soak: install
	SEED=$(SEED) SEEDS=$(SEEDS) STEPS=$(STEPS) SERVE_ARGS='$(SERVE_ARGS)' PROGRESS=$(PROGRESS) node --import tsx test/sim/soak.ts

# Every benchmark (bench/run.ts: rpc, commit, engine when bench/engine.ts is built, federation);
# quick mode: make bench BENCH_ARGS=--quick. The RPC bench uses h2load when installed
# (apt-get install nghttp2-client), else a Node load generator.
BENCH_ARGS ?=
bench: build
	node --expose-gc dist/bench/run.js $(BENCH_ARGS)

# Long fuzzing run of the wire decoders and the engine (test/fuzz/run.ts); the
# test suite runs the same fuzzers with a fixed seed and a small budget.
# FUZZ_INPUTS (default 10 million), FUZZ_ENGINE_INPUTS, FUZZ_SEED, FUZZ_OUT.
fuzz: install
	tsx test/fuzz/run.ts

clean:
	rm -rf dist node_modules/.install-stamp
