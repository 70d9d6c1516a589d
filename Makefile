# kfc-lite: two commands, `make lab` and `make test`, both from nothing but Python 3.10+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kfc-lite-installed
# Set TORCH_LOCAL= to skip the local-wheel probe and let pip pick torch from the project's range.
TORCH_LOCAL ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: lab test lint install student nbgrader book clean-venv help ci-browser

help:
	@echo "make lab      set up .venv and start JupyterLab on notebooks/"
	@echo "make test     set up .venv, run the linter and then the whole test suite, notebooks included (quick mode)"
	@echo "make lint     ruff check and ruff format --check over the repository"
	@echo "make student  write the student edition of every notebook to build/student/"
	@echo "make nbgrader write an nbgrader course (an assignment per notebook, autograded checks) to build/nbgrader/"
	@echo "make book     execute the notebooks (quick mode; KFC_QUICK=0 for full) into a website in build/book/html/"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# A torch wheel already on local disk (find-links) is taken first and without the index: on CI and the
	@# course's machines that is a CPU build, so no multi-GB CUDA download. Elsewhere the probe fails quietly
	@# and pip chooses torch from the project's range, so GPU users get their CUDA build.
	@if [ -n "$(TORCH_LOCAL)" ] && ! $(BIN)/python -c "import torch" 2>/dev/null; then \
	  $(BIN)/python -m pip install --quiet --no-index --no-deps "$(TORCH_LOCAL)" 2>/dev/null \
	    && echo "took $(TORCH_LOCAL) from local disk" \
	    || echo "no local $(TORCH_LOCAL) wheel: pip chooses torch from the project's range"; \
	fi
	$(BIN)/python -m pip install --quiet -e '.[dev,sweep]'
	@touch $@

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

# The linter runs before the tests: a style error fails in seconds, before the minutes of the suite.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# On CI (CI=true) the browser tests' Chromium comes from Debian's packages; elsewhere those tests say why they skip.
test: $(STAMP) lint $(if $(filter true,$(CI)),ci-browser)
	@# pytest exits 5 when it collects no test: make treats that, like any failure, as an error.
	KFC_QUICK=1 MPLBACKEND=Agg $(BIN)/python -m pytest $(PYTEST_ARGS)

ci-browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is not installed and cannot be installed here: the browser tests will be skipped"; fi; }

student: $(STAMP)
	$(BIN)/python -m kfc_lite.student notebooks build/student

# For teachers (docs/teaching.md). The course's source/ and nbgrader_config.py are rewritten; a gradebook, releases
# and submissions already in build/nbgrader/ stay.
nbgrader: $(STAMP)
	$(BIN)/python -m kfc_lite.nbgrader_course notebooks build/nbgrader

book: $(STAMP)
	KFC_QUICK=$${KFC_QUICK:-1} MPLBACKEND=Agg $(BIN)/python -m tools.book --out build/book

clean-venv:
	rm -rf $(VENV)
