# The two README commands. Both install what is missing (tools/ensure_deps.sh),
# then build and install the package the standard way (pip, editable, no build
# isolation so it works offline), then run.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install -q --no-build-isolation --no-deps -e .

.PHONY: setup build test demo bench gpu-check clean

setup:
	PYTHON=$(PYTHON) bash tools/ensure_deps.sh

build: setup
	$(PIP_INSTALL)
	$(PYTHON) setup.py -q build_ext --inplace

test: build
	$(PYTHON) -m pytest -q tests

demo: build
	$(PYTHON) tools/demo.py

bench: build
	$(PYTHON) benchmarks/run_all.py

gpu-check:
	bash tools/gpu_check.sh

clean:
	rm -rf build *.egg-info gpt2_engine/_C*.so
