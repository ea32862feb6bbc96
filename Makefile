# Each target creates the local virtual environment (.venv) first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export nnUNet_n_proc_DA ?= 2
export nnUNet_def_n_proc ?= 2
export nnUNet_compile ?= f

.PHONY: demo demo-quick test test-fast venv clean

$(BIN)/nnunet-iph: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/nnunet-iph

demo: venv
	$(BIN)/nnunet-iph demo --workdir demo_output

demo-quick: venv
	$(BIN)/nnunet-iph demo --quick --workdir demo_output_quick

test: venv
	$(BIN)/python -m pytest tests -q

test-fast: venv
	$(BIN)/python -m pytest tests -q -m "not slow"

clean:
	rm -rf demo_output demo_output_quick .pytest_cache
