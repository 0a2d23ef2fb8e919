# pilaf_exp — `make run` sets everything up on a fresh machine, then runs the default experiment.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: help install lock run test test-slow test-fast lint format bench bench-quick bench-samplers bench-decode bench-cold gpu-check gpu-check-rehearsal results regimes gradients clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Every dependency at its locked version (torch by version only: here the local CPU wheel, on a GPU
	# machine the CUDA one); then the package itself, which adds nothing the lock does not hold.
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the locked environment (requirements.lock) and the package

lock:  ## re-resolve the dependencies afresh into requirements.lock (pin one: make lock ARGS="transformers==5.24.0")
	PYTHON=$(PYTHON) bash scripts/lock.sh $(ARGS)

run: install  ## run the default experiment (online DPO, embedded task); extra Hydra args: make run ARGS="sampler=pilaf"
	$(PY) -m pilaf_exp $(ARGS)

test: install  ## the test suite without the slow end-to-end tests (~7 min on 2 cores: BENCHMARKS); CI runs it, then test-slow
	$(PY) -m pytest -q -m "not slow"

test-slow: install  ## the slow end-to-end tests: resume after kill -9, DDP, FSDP, SLURM, the Table 3 sweep, the GPU check rehearsal
	$(PY) -m pytest -q -m slow

test-fast: install  ## unit tests only (no end-to-end runs)
	$(PY) -m pytest -q tests/training/test_dpo.py tests/labelling tests/sampling/test_decoding.py tests/sampling/test_samplers.py

lint: install  ## ruff lint + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install  ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install  ## every speed comparison: samplers, mixture decoding vs TRL, online step vs TRL, exact walk, training step (~13 min; BENCHMARKS.md)
	$(PY) -m pilaf_exp.bench $(ARGS)

bench-quick: install  ## a ~2 min smoke run of `make bench` (CI runs it; its numbers are not the reported ones)
	$(PY) -m pilaf_exp.bench --quick

bench-samplers: install  ## only the sampler table (no TRL needed); extra args: make bench-samplers ARGS="--profile"
	$(PY) -m pilaf_exp.bench.samplers $(ARGS)

bench-decode: install  ## vanilla vs PILAF tokens/s on the Qwen2.5-0.5B shape, random weights (~20 min on 2 cores)
	$(PY) -m pilaf_exp.bench.decode --batch 16 64 --prompt-length 32 --new-tokens 16 --repeats 3 $(ARGS)

bench-cold: install  ## a newcomer's first run, timed: 5 runs of `python -m pilaf_exp`, each on an empty cache (~6 min)
	$(PY) -m pilaf_exp.bench.cold_run $(ARGS)

gpu-check: install  ## on a GPU machine: the paper's shapes in bf16 (steps/s, decode tok/s, memory); OUT=dir (default gpu_check)
	$(PY) -m pilaf_exp.bench.gpu_check $(or $(OUT),gpu_check) $(ARGS)

gpu-check-rehearsal: install  ## the GPU check at tiny shapes on CPU (CI runs it): OUT=dir (default gpu_check_cpu)
	$(PY) -m pilaf_exp.bench.gpu_check $(or $(OUT),gpu_check_cpu) --device cpu --tiny --steps 2 --batch 4 --prompt-length 8 --new-tokens 8

clean:  ## remove run outputs (not the SFT cache in ~/.cache/pilaf_exp)
	rm -rf outputs multirun .pytest_cache gpu_check gpu_check_cpu

results: install  ## the protocol pilot (docs/results/protocol.yaml), the claims it covers, their reports, RESULTS.md
	$(PY) -m pilaf_exp.results $(ARGS)

regimes: install  ## the regime map (docs/results/protocol_regimes.yaml): its new cells' runs, then docs/results/regimes.md (~100 min on 2 cores: 5 new cells x 16 runs, 98 min measured)
	$(PY) -m pilaf_exp.results.regimes $(ARGS)

gradients: install  ## the exact gradient analysis (5 vanilla runs, SFT + steps 100-300, ~2.5 h on 2 cores): docs/results/gradients.md
	bash scripts/gradients.sh
