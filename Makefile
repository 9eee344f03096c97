# ltm_d2: two commands do everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ltm_d2-setup
TORCH_SPEC := torch==2.14.1 torchvision==0.29.1
SAHI_SPEC := sahi==0.12.8
DEMO_CONFIG ?= configs/Shapes-Detection/ltm_R_18_FPN_short.yaml
DEMO_OUTPUT ?= output/demo

.PHONY: setup test test-fast fuzz demo bench study lint gpu-check gpu-wheels clean-venv

setup: $(STAMP)

# Re-run only when the packaging files change; each step is itself idempotent. A torch and a
# Detectron2 that the environment can already import (say, built from source with CUDA) are kept.
# SAHI, a client the tests run our plain RetinaNet config in, goes in without its dependencies: it
# asks for opencv-python>=4.12, which needs numpy 2, where the project keeps numpy<2 (setup.py); the
# packages its imports need are in the test extra, and pip check passes over that one pin.
$(STAMP): setup.py tools/install_detectron2.sh Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "setuptools<81" wheel
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	bash tools/install_detectron2.sh $(PY)
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip check | grep -v -e "^No broken requirements" -e "^sahi .*opencv-python" | (! grep .)
	$(PY) -m pip install --quiet --no-deps $(SAHI_SPEC)
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

# The fast tier: every test but those marked slow (a script run or iterations of training).
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

# The loss fuzzing campaign (bench/fuzz.py; not in `make test`, which runs a fixed subset): 10,000
# random cases over every matching mode, S-of-K bags and bfloat16 autocast. FUZZ_ARGS="--cases N".
fuzz: setup
	$(PY) bench/fuzz.py $(FUZZ_ARGS)

# Loss, training step and inference against RetinaNet (bench/; not tests). BENCH_QUICK=1: fewer runs.
bench: setup
	$(PY) bench/loss.py $(if $(BENCH_QUICK),--quick)
	$(PY) bench/model.py $(if $(BENCH_QUICK),--quick)

# The checks that need a GPU (tools/gpu_check.py, docs/gpu_check.md): at most 8 minutes on one GPU,
# summary in output/gpu_check/; without a GPU, one line that says so. It needs no `setup` (a bare
# GPU machine has no internet): the Python that holds torch there, this checkout on PYTHONPATH.
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)

# Wheels of what a GPU machine without internet lacks to import Detectron2 (Python
# GPU_PYTHON_VERSION), into .gpu-wheels/ for gpu-check to install there.
GPU_PYTHON_VERSION ?= 3.12
gpu-wheels:
	PYTHON=$(if $(wildcard $(PY)),$(PY),$(PYTHON)) bash tools/gpu_wheels.sh .gpu-wheels $(GPU_PYTHON_VERSION)

# Does learning to match win? Five detectors x 2 seeds and LTM ablations, trained identically
# (tools/study.py; about 2 h on a 2-core CPU; resumes where it stopped). STUDY_ARGS="--preset gpu --jobs 4".
study: setup
	$(PY) tools/study.py $(STUDY_ARGS)

# Train on the bundled dataset, evaluate on its val split (AP table), draw detections.
demo: setup
	$(PY) train_net.py --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_OUTPUT)
	$(PY) tools/draw_detections.py --config-file $(DEMO_CONFIG) \
		--weights $(DEMO_OUTPUT)/model_final.pth --output $(DEMO_OUTPUT)/pictures

# Lint and formatting (ruff.toml), without changing any file.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
