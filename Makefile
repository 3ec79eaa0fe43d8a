# `make demo` runs the main job, `make test` the test suite; each creates .venv and installs what it needs first.
# `make test-fast` leaves out the tests marked slow (the edit loop). Both run TEST_WORKERS pytest-xdist workers; tests
# that must share a worker (a module-scoped fixture: tests/conftest.py) carry an xdist_group
# mark, which --dist loadgroup keeps; --no-loadscope-reorder keeps the order tests/conftest.py gives (long groups first).
# --durations=30 lists the slowest test phases at the end of the run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=30
STAMP := $(VENV)/.installed
# torch is pinned to the release this project is built and tested against (a CUDA build that also runs on CPU).
TORCH := torch==2.14.1 torchvision==0.29.1
# DeepSpeed (in the dev extra) builds from source: DS_BUILD_OPS=0 compiles none of its ops ahead of use.
# tools/install.py installs with uv (several times faster than pip on torch's CUDA wheels), from the indexes pip uses.

.PHONY: install test test-fast demo serving-demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python tools/install.py $(TORCH)
	DS_BUILD_OPS=0 $(BIN)/python tools/install.py -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

demo: $(STAMP)
	$(BIN)/python demo/run_demo.py

serving-demo: $(STAMP)
	$(BIN)/python demo/serving_demo.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
