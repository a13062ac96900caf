# Two entry points (see README): `make run` serves the shipped default model on :8000,
# `make test` installs everything the tests need (Ray included) and runs lint + the whole test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 0.0.0.0
PORT   ?= 8000

.PHONY: run test serve-deps dev-deps assets lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

serve-deps: $(BIN)/python
	$(BIN)/python -m pip install -q -e .

dev-deps: $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[train,dev,batch]"

# MediaPipe face-detector models: taken from the pinned mediapipe wheel, sha256-checked, cached.
assets: $(BIN)/python
	$(BIN)/python -m app.assets

run: serve-deps assets
	$(BIN)/python -m app --host $(HOST) --port $(PORT)

lint: dev-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: dev-deps assets lint
	$(BIN)/python -m pytest -q
