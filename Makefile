# The README's two commands: `make demo` and `make test`. Each creates .venv if it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# CPU machines take the CPU wheel of torch 2.13.0; machines with an NVIDIA driver take PyPI's CUDA build.
TORCH   ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.6' || echo 'torch==2.13.0')

.PHONY: demo test lint install bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/expunge demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -rfE

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/methods.py

clean:
	rm -rf $(VENV) .pytest_cache
