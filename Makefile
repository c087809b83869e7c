# The two commands of the README: `make demo` and `make test`. Each creates .venv with pip on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU build of torch on this machine's disk is used when present; elsewhere pip resolves torch itself
# (set TORCH_INDEX=https://download.pytorch.org/whl/cpu for a CPU-only build off PyPI's CUDA default).
LOCAL_TORCH := $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl))
TORCH_INDEX ?=

.PHONY: demo test test-fast lint bench-speed bench-learning clean

$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(LOCAL_TORCH)" ]; then $(PIP) install -q "$(LOCAL_TORCH)"; \
	elif [ -n "$(TORCH_INDEX)" ]; then $(PIP) install -q torch --index-url "$(TORCH_INDEX)"; fi
	$(PIP) install -q -e ".[$*]"
	touch $@

demo: $(VENV)/.installed-extra
	$(PY) examples/cartpole_quickstart.py

test: $(VENV)/.installed-test
	$(PY) -m pytest -n 2 --durations=15

test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -n 2 -m "not slow"

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

# Each speed benchmark writes its JSON into benchmarks/results/speed/; the report renders them into docs/benchmarks.md.
bench-speed: $(VENV)/.installed-test
	$(PY) -m benchmarks.speed_train
	$(PY) -m benchmarks.speed_recurrent_train
	$(PY) -m benchmarks.speed_variants
	$(PY) -m benchmarks.speed_end_to_end
	$(PY) -m benchmarks.speed_pipelined_critic
	$(PY) -m benchmarks.speed_report

# The documentation, into docs/_build/html (open index.html): warnings are errors, cross-references checked (-n).
.PHONY: docs dist
docs: $(VENV)/.installed-docs
	$(VENV)/bin/sphinx-build -W --keep-going -n -b html docs docs/_build/html

# The wheel and the sdist, into dist/, checked as PyPI would (make test checks them too: tests/test_packaging.py).
dist: $(VENV)/.installed-test
	$(PY) -m build --no-isolation --outdir dist .
	$(PY) -m twine check --strict dist/*

# Hours on 2 cores; resumable (finished runs are skipped), then rewrites its section of docs/benchmarks.md.
bench-learning: $(VENV)/.installed-bench
	$(PY) -m benchmarks.learning run
	$(PY) -m benchmarks.learning report

# The support matrix (docs/compatibility.md): each row's virtualenv is built once under .compat/ROW, keyed on
# compat/ROW.txt, and the row's fast suite runs there. COMPAT_DIR=path re-uses another checkout's environments.
.PHONY: test-compat test-compat-floor test-compat-middle test-compat-newest
test-compat: test-compat-floor test-compat-middle test-compat-newest

test-compat-floor:
	compat/row.sh test floor

test-compat-middle:
	compat/row.sh test middle

test-compat-newest:
	compat/row.sh test newest

clean:
	rm -rf $(VENV) demo_output runs .pytest_cache docs/_build docs/_generated dist build
