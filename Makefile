# The README's two commands: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests run on 4 simulated CPU devices so pmap and sharding code paths are exercised. The tiny
# test networks spend most of their time in XLA compilation: LLVM optimisation level 0 and
# XLA's older elemental emitters instead of its fusion emitters cut it by about 3x (the
# tolerances come from the numerics, not from one code path's rounding).
TEST_ENV := XLA_FLAGS="--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false" JAX_PLATFORMS=cpu
# pytest-xdist workers, one per core of the 2-core CI machine (each holds up to ~6 GB).
TEST_WORKERS ?= 2

.PHONY: setup test demo mutants clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

# The embedded default: render the procedural domains, train the non-adapted baseline,
# input level only, output level only and GIO-Ada (configs/demo.py), evaluate each on the
# target domain, print the table and write the figures into demo_output/.
demo: $(STAMP)
	JAX_PLATFORMS=cpu $(PY) -m gio_ada_jax.demo --output_dir demo_output

# Seeded one-line bugs, each against the tests that concern it (dev/mutants.py; about 20 min
# on 2 cores). The table of killed and surviving mutants is in docs/development.md.
mutants: $(STAMP)
	$(PY) dev/mutants.py --output mutants.md

clean:
	rm -rf $(VENV)
