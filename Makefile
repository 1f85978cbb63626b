# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The PyTorch build to install first (this x86-64 machine has these two on local disk;
# on aarch64 use TORCH_SPEC="torch==2.9.1 torchvision==0.24.1").
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PIP := $(PY) -m pip install --disable-pip-version-check -q
DEMO_OUT ?= demo-out

.PHONY: demo test test-all lint install install-dev browser clean bench compare-baseline

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH_SPEC)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/dermlearn demo --out $(DEMO_OUT)

# Debian's Chromium for the headless page tests (report, web page); they skip without it.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get install -y -q chromium >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } || \
	  echo "note: Chromium not installed (needs root/apt); browser tests will be skipped"

# Lint first (ruff, configured in pyproject.toml), so CI, which runs `make test`, lints too.
test: $(VENV)/.installed-dev browser
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check src tests benchmarks

test-all: $(VENV)/.installed-dev browser
	$(PY) -m pytest -q -m "slow or not slow"

# Single-machine performance (issue 6): one side-by-side table -> benchmarks/results/latest.md,
# then a short serving smoke benchmark. A few minutes on 2 cores; needs ../shared/data/ham10000.
BENCH_ARGS ?= --images 128 --train-images 64 --rss-images 100,400 --cv-images 100 --budget 8
bench: $(VENV)/.installed
	$(PY) benchmarks/bench.py $(BENCH_ARGS)
	$(PY) benchmarks/serve_bench.py --tiny --requests 20 --concurrency 1,4 --raw-repeats 10

# Issue 21: dermlearn's default recipe against a plain timm fine-tune on the same held-out lesions
# of HAM10000, paired (about 50 + 21 min on 2 cores); prints the table, writes runs/baseline/.
compare-baseline: $(VENV)/.installed
	test -d runs/ham-default || $(VENV)/bin/dermlearn train ../shared/data/ham10000 --out runs/ham-default
	$(PY) benchmarks/baseline.py ../shared/data/ham10000 --run runs/ham-default --out runs/baseline

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .hypothesis
