# sfu: one-command set-up on Debian 12 / Ubuntu.
#   make run    what running needs (compiler and OpenSSL headers when root, venv, build), then `sfu serve`
#   make test   that, plus the test stack (Chromium, GStreamer, Redis, pytest, aiortc, Playwright), then
#               the whole suite (unit, sim, integration, e2e with real clients), after a short run of
#               each fuzz target (fuzz-short; fuzz-long is the long run)
#   make build  the run set-up alone: .venv with `sfu` on its bin/

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

# Debian packages: compiler and OpenSSL headers for the fast path (all that running needs); Chromium,
# GStreamer and Redis for the real-client tests; iproute2 and nftables for the network-namespace tests.
RUN_PACKAGES := build-essential pkg-config libssl-dev python3-venv python3-dev
TEST_PACKAGES := chromium gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-nice \
	python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1 \
	redis-server iproute2 nftables procps

.PHONY: all build run test system-deps test-deps clean fastpath lint

all: build

# $(call apt,PACKAGES): install the missing ones when root with apt-get, else say what is needed
define apt
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
		if [ -n "$$missing" ]; then \
			echo "installing system packages: $$missing"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
		fi; \
	else \
		echo "not root (or no apt-get): skipping system packages; needed: $(1)"; \
	fi
endef

system-deps: .stamp-system
.stamp-system:
	$(call apt,$(RUN_PACKAGES))
	@touch $@

.stamp-system-test: | .stamp-system
	$(call apt,$(TEST_PACKAGES))
	@touch $@

# running: the package and uvloop only
$(VENV)/.stamp-venv: pyproject.toml setup.py | .stamp-system
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel Cython
	$(PIP) install -q --no-build-isolation -e '.[uvloop]'
	@touch $@

# testing: the test extras (pytest, aiortc, Playwright, ruff...) on top
test-deps: $(VENV)/.stamp-test
$(VENV)/.stamp-test: $(VENV)/.stamp-venv pyproject.toml setup.py | .stamp-system-test
	$(PIP) install -q --no-build-isolation -e '.[test,uvloop]'
	@touch $@

fastpath: $(VENV)/.stamp-venv
	$(PY) setup.py -q build_ext --inplace

build: fastpath
	@$(VENV)/bin/sfu --version

run: build
	$(VENV)/bin/sfu serve

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check sfu tests bench fuzz

test: build test-deps lint fuzz-short
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Fuzzing (docs/security.md "Fuzzing"): a few seconds per target in `make test`, failing on a crash;
# the long run shares 10 million executions among the targets (at most 1300 s each), at low priority.
.PHONY: fuzz-short fuzz-long
fuzz-short: build test-deps
	$(PY) fuzz/run.py --seconds 2 --jobs 2

fuzz-long: build test-deps
	nice -n 19 $(PY) fuzz/run.py --total 10000000 --seconds 1300 --jobs 3 --json fuzz-long.json

clean:
	rm -rf build *.egg-info sfu/_fastpath.c sfu/_fastpath*.so .stamp-system .stamp-system-test $(VENV)
