# Two commands do everything on a fresh machine:
#   make demo   - compress LeNet-300-100 on MNIST (trains the baseline first if none is cached)
#   make test   - run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export WEIGHTZIP_DATA ?= $(abspath ../shared/data)

.PHONY: setup demo test bench clean

$(BIN)/weightzip: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU build on this machine (a plain `torch` pulls CUDA wheels)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,bench]"
	touch $(BIN)/weightzip

setup: $(BIN)/weightzip

demo: setup
	mkdir -p runs/demo
	$(BIN)/weightzip compress lenet300_100 --data mnist --recipe recipes/deep-compression.yaml \
		--workdir runs/demo -o runs/demo/lenet300_100.wz --plot runs/demo/lenet300_100.png
	$(BIN)/weightzip inspect runs/demo/lenet300_100.wz
	$(BIN)/weightzip eval runs/demo/lenet300_100.wz --data mnist

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) runs .pytest_cache
