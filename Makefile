# The two entry points of the README are `make run` and `make test`.
# buf, tsc and vitest come from node_modules: nothing is fetched but npm packages.
SHELL := /bin/bash
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

DOMAIN ?= localhost
LISTEN ?= 127.0.0.1:8443
DATA_DIR ?= data
DEV_DIR ?= .dev

.PHONY: install generate lint typecheck build certs run test test-mongo bench clean

# npm ci only when the lock file changed since the last install.
node_modules/.install-stamp: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

install: node_modules/.install-stamp

generate: install
	buf generate

lint: install
	buf lint
	@if git rev-parse --verify -q main >/dev/null; then buf breaking --against '.git#branch=main'; fi

typecheck: install
	tsc -p . --noEmit

build: install
	rm -rf dist
	tsc -p .

# Development TLS material: a local CA and a certificate for $(DOMAIN), made once.
certs: build
	node dist/src/cli/main.js dev-certs --out $(DEV_DIR) --domain $(DOMAIN)

run: install generate build certs
	node dist/src/cli/main.js serve --domain $(DOMAIN) --listen $(LISTEN) --data-dir $(DATA_DIR) \
	  --tls-cert $(DEV_DIR)/$(DOMAIN)/cert.pem --tls-key $(DEV_DIR)/$(DOMAIN)/key.pem --tls-ca $(DEV_DIR)/ca.pem

test: install lint typecheck
	vitest run

test-mongo: install
	@test -n "$$MONGODB_URI" || { echo "set MONGODB_URI (a replica set) to run the MongoDB suite"; exit 2; }
	vitest run test/store test/e2e/mongo-instances.test.ts

# Every benchmark (bench/run.ts: rpc, commit, engine when bench/engine.ts is built, federation);
# quick mode: make bench BENCH_ARGS=--quick. The RPC bench uses h2load when installed
# (apt-get install nghttp2-client), else a Node load generator.
BENCH_ARGS ?=
bench: build
	node --expose-gc dist/bench/run.js $(BENCH_ARGS)

clean:
	rm -rf dist node_modules/.install-stamp
