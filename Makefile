# Two entry points a newcomer needs: `make demo` and `make test`.
# torch==2.13.0 is installed first: it is the CPU wheel; a plain `torch` can pull a multi-GB CUDA build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install browser demo test test-all lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"

# The report's browser test renders pages in Debian's Chromium (skipped if absent,
# except under CI, where BPO_REQUIRE_CHROMIUM=1 makes it fail).
browser:
	@command -v chromium >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: could not install chromium (needs root); the browser test will be skipped"

demo: install
	$(BIN)/bpo demo --out runs/demo

test: install browser
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

test-all: install
	$(BIN)/pytest -q --runslow

bench: install
	$(BIN)/python bench/data_stream.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
