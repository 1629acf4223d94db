# The two commands of the README. Both create .venv when it is missing and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test bench clean

$(PY):
	python3 -m venv $(VENV)

demo: $(PY)
	$(PIP) -e .
	$(VENV)/bin/simulate validate examples/demo.toml
	$(VENV)/bin/simulate run examples/demo.toml --seeds 1-3 --out runs/demo --force

test: $(PY)
	$(PIP) -e '.[dev,measure,dist]'
	$(PY) -m pytest -q

bench: $(PY)
	$(PIP) -e '.[dev]'
	$(PY) bench/sim_speed.py

clean:
	rm -rf runs .pytest_cache *.egg-info
