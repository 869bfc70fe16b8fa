# The README's commands. Every target is a thin wrapper over a script in scripts/.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/web-analytics-pipeline/target

.PHONY: help up down status demo test test-faults retention lambda-e2e bench bench-ledger bench-sustained package fmt lint test-browser plan-check replay forget

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

up: ## start the local AWS stack and the pipeline (producer :3000, consumer runner) in the background
	@bash scripts/up.sh

down: ## stop everything `make up` started
	@bash scripts/down.sh

status: ## show what is running
	@bash scripts/local-stack.sh status

demo: ## the main job: bring the pipeline up, drive a realistic load, reconcile, print a summary
	@bash scripts/demo.sh

retention: ## delete what outlived its retention (lake/dead-letter hours, expired DynamoDB items, old PostgreSQL rows); `make up` runs it hourly
	@bash scripts/retention.sh

replay: ## replay what the consumer gave up on (ARGS="queue [--execute]" | "dead-letter [--execute]"); dry run by default
	@bash scripts/replay.sh $(ARGS)

forget: ## erase a visitor: SITE=<site id> ANONYMOUS_ID=<id> (or USER_ID=<id>); no ID = process pending requests; prints the audit
	@SITE="$(SITE)" ANONYMOUS_ID="$(ANONYMOUS_ID)" USER_ID="$(USER_ID)" bash scripts/forget.sh

test: ## fmt, clippy, unit + integration tests, Lambda e2e, browser test (starts the local stack when needed)
	@bash scripts/test.sh

test-faults: ## fault injection under load: SIGKILL, paused emulators, PostgreSQL restart, poison, shard split
	@bash scripts/test-faults.sh

test-browser: ## the tracker in headless chromium against its own pipeline: SPA, offline, reload, closed tab, forbidden origin; reconciled
	@bash scripts/test-browser.sh

lambda-e2e: ## the Lambda zips' bootstraps under cargo-lambda's runtime emulator against the local stack
	@bash scripts/lambda-e2e.sh

bench: ## criterion benchmarks + an end-to-end k6 load; writes bench/RESULTS.md
	@bash scripts/bench.sh

bench-ledger: ## the PostgreSQL claim + aggregate transaction alone, 1/4/16/64 writers (ARGS="--seconds 60 ...")
	@bash scripts/ledger-bench.sh $(ARGS)

bench-sustained: ## open-model load (5,000 events/s for 10 min) on release builds: PASS/FAIL, CPU per process; not in CI
	@bash scripts/bench-sustained.sh

package: ## build the Lambda zips into target/lambda/ (ARCH=arm64|x86_64, RDS_CA_BUNDLE=pem)
	@bash scripts/package.sh

fmt: ## format the code
	cargo fmt --all

plan-check: ## lint the tracking plans (schemas/tracking-plan/*.json): draft 2020-12, x-mode, file name = event type
	@bash scripts/plan-check.sh

lint: ## clippy with warnings as errors
	cargo clippy --workspace --all-targets -- -D warnings
