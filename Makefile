# lthgan: one command to set up and test (`make test`), one to run the demo search (`make demo`).
SHELL := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Pinned torch: a CUDA 13.0 build; the CUDA kernels compile whenever nvcc is present.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
JOBS   ?= 2
TORCH_PREFIX = $$($(PY) -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')

.PHONY: all venv build test test-py test-cpp demo bench clean

all: build

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 'setuptools>=64' wheel
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q numpy click torch-fidelity safetensors scikit-learn scikit-image \
		matplotlib tqdm pybind11 ninja pytest pytest-benchmark
	touch $@

venv: $(VENV)/.installed

# Builds lthgan._C in place (CUDA sources too when nvcc is found; LTHGAN_CUDA=0 forces CPU-only)
# and installs the package in editable mode, with the `lthgan` console script.
build: $(VENV)/.installed
	MAX_JOBS=$(JOBS) $(PIP) install -q --no-build-isolation --no-deps -e .
	$(PY) -c "import lthgan, torch; print('lthgan', lthgan.__version__, 'built; CUDA kernels:', torch.ops.lthgan.global_topk_masks.default.has_kernel_for_dispatch_key('CUDA'))"

# One intra-op thread per process: tests start subprocesses (resume after a kill, torchrun), and
# oversubscribed small convolutions run many times slower. Tests that need threads set them.
test-py: build
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider tests

# The same csrc/ through CMake, with a C++ program calling the ops through the dispatcher.
test-cpp: $(VENV)/.installed
	$(PIP) install -q 'cmake>=3.27'
	$(VENV)/bin/cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$(TORCH_PREFIX)" -DPython3_EXECUTABLE=$(abspath $(PY)) >/dev/null
	$(VENV)/bin/cmake --build build/cmake -j$(JOBS)
	$(VENV)/bin/ctest --test-dir build/cmake --output-on-failure

test: test-py test-cpp

demo: build
	$(VENV)/bin/lthgan search --gan sngan --preset quick --out runs/demo-sngan

bench: build
	$(PY) -m pytest bench -q -p no:cacheprovider --benchmark-only --benchmark-columns=median,iqr,rounds --benchmark-sort=name

clean:
	rm -rf build lthgan/_C*.so *.egg-info
