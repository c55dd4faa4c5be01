# fewshot developer commands. `make test` works on a fresh machine: it builds .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch pair this project is tested with; on the dev/CI machines pip takes it from local disk.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 60

.PHONY: install test test-avx2 test-slow lint fuzz demo cuda-check gpu-check cpu-ops bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The numeric tests once more on the AVX2 kernels of oneDNN, MKL and ATen: an AVX-512 machine runs their AVX-512 ones
# in `make test`, and the tolerances, derived from float32 arithmetic (tests/float32_bounds.py), must hold on both.
# On a CPU without AVX-512 the caps change nothing. ~2 min on a 2-core machine.
AVX2_ENV := ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2
NUMERIC_TESTS := tests/test_ops.py tests/test_nets.py tests/test_cpu_bf16.py tests/test_reg_dgm.py tests/test_metrics.py tests/test_disp.py \
	tests/test_augment.py tests/test_generate.py tests/test_transfer.py

test-avx2: install
	$(AVX2_ENV) $(PY) -m pytest -q $(NUMERIC_TESTS) $(PYTEST_ARGS)

# Heavier checks marked `slow` (none at the moment: the full-size equivalence tests fit the default budget).
test-slow: install
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS) || test $$? -eq 5

lint: install
	$(PY) -m ruff check fewshot tests benchmarks fuzz

# Fuzz the readers of untrusted input (bundles, official pickles, checkpoint references, images) with atheris,
# FUZZ_SECONDS per harness; not part of `make test`. Inputs that broke the contract land in fuzz/out/*/findings/.
fuzz: $(VENV)/.fuzz-installed
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS)

$(VENV)/.fuzz-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[fuzz]'
	touch $@

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
