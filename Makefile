# The two commands of the README. Both create .venv when it is missing and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test bench mutation reproduce clean

$(PY):
	python3 -m venv $(VENV)

demo: $(PY)
	$(PIP) -e .
	$(VENV)/bin/simulate validate examples/demo.toml
	$(VENV)/bin/simulate run examples/demo.toml --seeds 1-3 --out runs/demo --force

test: $(PY)
	$(PIP) -e '.[dev,measure,dist,track,rl]'
	$(PY) -m pytest -q

bench: $(PY)
	$(PIP) -e '.[dev]'
	$(PY) bench/sim_speed.py

# long (hours on 2 cores; it resumes where it stopped), so not part of `make test`: the mutation score of the core, per module
mutation: $(PY)
	$(PIP) -e '.[dev]'
	$(PY) bench/mutation.py

# every table and figure the simulator publishes (README, docs/results, docs/figures): the sweeps
# and studies (resumable, into runs/), then the analyse commands; about two hours on 2 cores
reproduce: $(PY)
	$(PIP) -e '.[dev]'
	$(PY) bench/reproduce.py

# caches and build leftovers only; runs/ holds your outputs and is yours to remove
clean:
	rm -rf .pytest_cache *.egg-info mutants
