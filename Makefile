# Two entry points for a fresh machine; each makes its own virtualenv and installs what it needs.
#   make demo   prune the bundled digits CNN to about half its MACs and print before/after
#   make test   lint + the whole test suite (exports the torchvision zoo once into a cache)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ZOO_CACHE ?= $(HOME)/.cache/onnxprune/zoo

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# silero-vad's, ddddocr's and wired_table_rec's wheels are test fixtures (the ONNX files they
# ship); their own dependencies (torchaudio; opencv and rapidocr, already there) are not needed,
# so they are installed without them.
$(VENV)/.test: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,frameworks]'
	$(BIN)/python -m pip install -q --no-deps silero-vad==6.2.3 ddddocr==1.6.1 wired_table_rec==0.0.3
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/python tools/demo.py

lint: $(VENV)/.test
	$(BIN)/ruff check .

test: $(VENV)/.test
	$(BIN)/ruff check .
	ONNXPRUNE_STRICT=1 ONNXPRUNE_ZOO_CACHE=$(ZOO_CACHE) $(BIN)/python -m pytest -n 2 --durations=15

clean:
	rm -rf $(VENV) build dist *.egg-info
