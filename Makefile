# reptile: `make help` lists the targets. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first, on its own, so that the right build is chosen: the CPU build where no NVIDIA
# GPU is visible (PyTorch's CPU index, or a local wheel when pip is configured with one), the default
# (CUDA) build from PyPI otherwise. Override: make install TORCH_SPEC=torch==2.13.0 TORCH_INDEX=...
TORCH_SPEC ?= torch==2.13.0
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
endif
STAMP := $(VENV)/.installed

.PHONY: help install demo test test-slow bench lint clean

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if ! $(BIN)/python -c "import torch" 2>/dev/null; then \
	  if [ -n "$(TORCH_INDEX)" ]; then \
	    $(BIN)/pip install --no-deps --timeout 20 --retries 1 --index-url "$(TORCH_INDEX)" "$(TORCH_SPEC)" || \
	    $(BIN)/pip install --no-deps "$(TORCH_SPEC)"; \
	  else $(BIN)/pip install --no-deps "$(TORCH_SPEC)"; fi; \
	fi
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(STAMP) ## Create .venv with torch (CPU build without a GPU) and reptile-cli
	@$(BIN)/reptile --version

demo: $(STAMP) ## Sine-wave demo: meta-train (30,000 iterations) and evaluate on 1,000 test tasks
	rm -rf runs/demo
	$(BIN)/reptile train experiment=sine hydra.run.dir=runs/demo
	$(BIN)/reptile eval runs/demo/last.pt eval.episodes=1000

# the default suite runs on TEST_WORKERS pytest-xdist workers with one torch thread each (OMP_NUM_THREADS=1:
# two workers of 2 threads each on 2 cores oversubscribe them); TEST_WORKERS=0 runs it in this process
TEST_WORKERS ?= 2
test: $(STAMP) ## Run the default test suite (fast; no slow or GPU tests)
	OMP_NUM_THREADS=1 $(BIN)/pytest -n $(TEST_WORKERS)

test-slow: $(STAMP) ## Run the slow tests too (real training runs)
	OMP_NUM_THREADS=1 $(BIN)/pytest -n $(TEST_WORKERS) -m "slow or not slow"

bench: $(STAMP) ## Speed of Omniglot 5-way 1-shot: baseline loop vs sequential vs batched (writes bench.json)
	$(BIN)/python -m reptile_cli.bench

lint: $(STAMP) ## ruff
	$(BIN)/ruff check reptile_cli tests data_scripts

clean: ## Remove runs and caches (keeps .venv and data)
	rm -rf runs multirun outputs .pytest_cache build *.egg-info
