# Set-up and the two everyday commands: `make eval` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A local copy of ALFWorld's games (as on the project's machines); without it `prm-gym data` downloads them.
ALFWORLD_ARCHIVE ?= $(wildcard ../shared/data/alfworld/json_2.1.2-tw-pddl.tar.xz)
TORCH_VERSION ?= 2.13.0
EVAL_ARGS ?= --agent best-of-n --n 8 --mc-rollouts 16 --backend fast --split valid_unseen --output-dir runs/eval

.PHONY: install data eval lint test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned, so that nothing pulls another build of it in (the CPU wheel on the project's machines).
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -e ".[llm,sb3,ray,dev]"
	touch $@

install: $(BIN)/.installed

data: install
	$(BIN)/prm-gym data $(if $(ALFWORLD_ARCHIVE),--archive $(ALFWORLD_ARCHIVE))

eval: data
	$(BIN)/prm-gym eval $(EVAL_ARGS)

lint: install
	$(BIN)/ruff check prm_gym tests benchmarks
	$(BIN)/mypy prm_gym

test: data lint
	$(BIN)/pytest -n 2 --timeout 1800 --durations=25
