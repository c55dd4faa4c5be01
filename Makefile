# fewshot developer commands. `make test` works on a fresh machine: it builds .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch pair this project is tested with; on the dev/CI machines pip takes it from local disk.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install test test-slow lint demo cuda-check gpu-check cpu-ops bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Heavier checks marked `slow` (none at the moment: the full-size equivalence tests fit the default budget).
test-slow: install
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS) || test $$? -eq 5

lint: install
	$(PY) -m ruff check fewshot tests benchmarks

# The main job in miniature, on the CPU in about 2 minutes: fine-tune the tiny base shipped in the package
# (`demo-base`, trained on the built-in discs) to 32 built-in ring images (presets/demo.toml), then write
# RUN/before-after.png: base samples | target images | fine-tuned samples, the same seeds before and after.
# 1 min 41 s on 2 idle cores (BENCHMARKS.md, "Demo"). One thread: a second is 1.5x faster on an otherwise idle
# machine but several times slower whenever another process wants a core. The plain-PyTorch ops: at these
# sizes the compiled ones are no faster, and their first build on a new machine would add ~90 s.
DEMO_ENV ?= OMP_NUM_THREADS=1 FEWSHOT_OPS=reference
demo: install
	$(DEMO_ENV) $(PY) -m fewshot train --preset demo --name demo --outdir runs
	run=$$(ls -d runs/*-demo | tail -n 1) && $(DEMO_ENV) $(PY) -m fewshot.demo $$run

cuda-check: install
	$(PY) -m fewshot.cuda.build --check-cuda

# On a machine with a CUDA device: the `gpu` tests and the GPU benchmarks (log in gpu-check/).
gpu-check: install
	PY=$(PY) bash benchmarks/gpu_check.sh

cpu-ops: install
	$(PY) -m fewshot.cuda.build --check-cpu

bench: install
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
