# `make demo`: set up .venv and run the whole pipeline on the generated demo capture (`singinghead run`:
# the configuration header, overall progress and time left, the stand-in warning at the end).
# `make test`: set up .venv and run the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench mutation clean-demo browser

setup: $(STAMP)

# open3d needs Debian's libusb at import time; torch/torchvision come from local wheels;
# facenet-pytorch 2.6.0 pins torch<2.3 and Pillow<10.3, hence --no-deps.
$(STAMP): setup.cfg pyproject.toml
	@dpkg -s libusb-1.0-0 >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libusb-1.0-0)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --no-deps facenet-pytorch==2.6.0
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

demo: setup
	@test -n "$$(ls raw 2>/dev/null | grep -v README)" || $(BIN)/singinghead demo-capture --out raw --truth demo_truth
	$(BIN)/singinghead run

# The report's test opens the page in a real headless browser: Debian's chromium.
browser:
	@dpkg -s chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)

test: setup browser
	$(BIN)/python -m pytest -q tests

bench: setup
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

# Mutation testing of the core modules (mutation/modules.toml): on demand, never in CI; cached per
# module under mutation/.sessions, resumable; writes mutation/survivors.txt.
# `make mutation MODULES=tasks/common/names.py` runs only the named modules.
# cosmic-ray is installed here only: `make test` does not need it.
mutation: setup
	$(BIN)/pip install -q 'cosmic-ray>=8.7,<9'
	$(BIN)/python mutation/run.py $(MODULES)

# Removes only what the demo generator wrote (the subjects it recorded in demo_truth/demo_capture.json),
# their outputs and the shared dataset/report/release built from them; a lab's own captures stay.
clean-demo: setup
	$(BIN)/singinghead demo-capture --remove --out raw --truth demo_truth
