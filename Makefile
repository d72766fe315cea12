# SwiftDeploy developer entry points. `make demo` and `make test` are the two commands a
# newcomer runs on a fresh machine; both run the idempotent set-up first.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export ANSIBLE_FORCE_COLOR := 0
PYTEST_ARGS ?=

.PHONY: setup demo teardown test unit integration lint sanity molecule test-min bench-app bench-deploy bench-promote bench-promote-thirdparty bench-keepalive bench-auto bench-audit bench-analysis bench-fleet clean

setup:
	bash scripts/setup.sh

# The main job: validate and deploy the example stack on this machine, then print its URL.
demo: setup
	ansible-playbook playbooks/validate.yml
	ansible-playbook playbooks/deploy.yml

teardown: setup
	ansible-playbook playbooks/teardown.yml

# The whole test suite.
test: setup
	bash scripts/test.sh

unit: setup
	pytest -q tests/unit $(PYTEST_ARGS)

integration: setup
	pytest -q tests/integration $(PYTEST_ARGS)

lint: setup
	bash scripts/lint.sh

sanity: setup
	bash scripts/sanity.sh

molecule: setup
	cd $(CURDIR) && molecule test -s default

# Sanity, unit tests and one lifecycle under the oldest ansible-core meta/runtime.yml allows.
test-min: setup
	bash scripts/test-min.sh

bench-app: setup
	python scripts/bench_app.py

# COMPARE=REV: that revision and this checkout, interleaved, with the ratio new/old.
bench-deploy: setup
	python scripts/bench_deploy.py $(if $(COMPARE),--compare $(COMPARE))

bench-promote: setup
	python scripts/bench_promote.py

# The same with the third-party-style test image (tests/fixtures/thirdparty_app), judged at the edge.
bench-promote-thirdparty: setup
	python scripts/bench_promote.py --app thirdparty

# Client keep-alive across switches (nginx.edge): throughput at 64 connections against the
# close-per-request default, and keep-alive clients through bench-promote's sequence (docs/keepalive.md).
bench-keepalive: setup
	python scripts/bench_keepalive.py

# promote.yml -e mode=auto under bench-promote's load: a good release to 100 %, canaries with 20 %
# and 2 % injected errors rolled back (docs/auto-rollout.md).
bench-auto: setup
	python scripts/bench_auto.py

bench-audit: setup
	python scripts/bench_audit.py

# A rolling deploy over three fleet hosts (their own dockerd and sshd) with batch 1, batch 100%
# and one host alone, with the failed requests per host (docs/fleet-rollout.md).
bench-fleet: setup
	python scripts/bench_fleet.py

# Canary analysis in simulation: false rollbacks of identical releases and time to detect a
# regression, ours against a Flagger-like and a Kayenta-like judge (docs/analysis.md).
# Standard library only and no Docker, so it does not wait for `setup`.
bench-analysis:
	python3 scripts/bench_analysis.py

clean:
	rm -rf .pytest_cache tests/output reports
