# `make app` and `make test` set everything up on a fresh machine, then serve / test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: app test test-fast browser-deps clean-cache help

help:
	@echo "make app   - set up .venv and serve the Streamlit app on http://127.0.0.1:$(PORT)"
	@echo "make test  - set up .venv and run the whole test suite"

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ifbeta.embed --warm  # compiles umap's numba kernels once (~1 min) so the first map is quick
	@touch $(STAMP)

browser-deps:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || \
		( (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		  || echo "chromium could not be installed: browser tests will be skipped" )

app: $(STAMP)
	$(BIN)/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest -q tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "not slow and not browser"

clean-cache:
	find cache -mindepth 1 -not -name .gitkeep -delete
