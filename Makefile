# make run   — set everything up, then run nginx + ingestd + Datasette in the foreground
# make test  — set everything up, then run ruff and the whole test suite
# make lint  — ruff only
# make bench — every benchmark in bench/, short mode (a quick look, about 10 minutes);
#              make bench FULL=1 for the full mode, whose figures bench/RESULTS.md quotes

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages: what `make run` needs, and what the tests need on top
# (promtool, headless Chromium with a font for screenshots, systemd-analyze, curl and openssl for the docs' examples and TLS).
SYSTEM_PACKAGES := nginx libnginx-mod-http-js libnginx-mod-http-perl logrotate
TEST_PACKAGES := $(SYSTEM_PACKAGES) prometheus chromium fonts-dejavu-core systemd curl openssl
# bench/ needs what the tests need (it reuses tests/), wrk (end_to_end.py), etcd-server (kv.py) and the
# Python packages of setup.py's `bench` extra (pyinstrument, for load_rate.py's profile).
BENCH_PACKAGES := $(TEST_PACKAGES) wrk etcd-server
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

# Run one at a time: they measure a 2-core machine, and would measure each other.
BENCHMARKS := load_rate varied_mix daemon_load end_to_end read_side idle_cost idle_projects checkpoint_cost watch_cost keys_cost stream_reads restore_rate kv blobs

.PHONY: run test lint bench system-deps venv clean

run: system-deps $(STAMP)
	$(BIN)/smalltable up $(ARGS)

test: SYSTEM_PACKAGES := $(TEST_PACKAGES)
test: system-deps $(STAMP)
	$(BIN)/ruff check ingestd tests bench setup.py
	$(BIN)/ruff format --check ingestd tests bench setup.py
	$(BIN)/pytest $(PYTEST_ARGS)

bench: SYSTEM_PACKAGES := $(BENCH_PACKAGES)
bench: system-deps $(BENCH_STAMP)
	@for b in $(BENCHMARKS); do \
	  echo "== bench/$$b.py $(if $(FULL),,--short)"; \
	  $(BIN)/python bench/$$b.py $(if $(FULL),,--short) || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check ingestd tests bench setup.py
	$(BIN)/ruff format --check ingestd tests bench setup.py

# Debian packages: installed with apt-get when run as root, otherwise we stop and
# print the exact command. Debian's python3 needs python3-venv to make a virtualenv.
system-deps:
	@missing=""; \
	for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing"; \
	    echo "install them with:  sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

$(STAMP): setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# The bench extra on top of the test one; `make test` never needs it.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

venv: $(STAMP)

clean:
	rm -rf $(VENV) smalltable-home .pytest_cache build *.egg-info
