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
# constraints.txt pins the CUDA libraries torch pulls in to the releases on the machines' disk: an
# unpinned nvidia-nvjitlink took PyPI's newest, a 47 MB download that a dropped connection failed
# (CI, 2026-12-06). What still comes from PyPI is retried, 3 times, 20 s apart.
PIP_INSTALL := $(BIN)/pip install -q --resume-retries 20 -c constraints.txt
retry = for try in 1 2 3; do $(1) && exit 0; [ $$try = 3 ] || { echo "pip failed (try $$try of 3); retrying in 20 s" >&2; sleep 20; }; done; \
	echo "pip failed 3 times: check the network and pip's index, then run make again (it resumes)" >&2; exit 1

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@dpkg -s libusb-1.0-0 >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libusb-1.0-0)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@($(call retry,$(BIN)/pip install -q --upgrade pip wheel setuptools))
	@($(call retry,$(PIP_INSTALL) torch==2.14.1 torchvision==0.29.1))
	@($(call retry,$(PIP_INSTALL) --no-deps facenet-pytorch==2.6.0))
	@($(call retry,$(PIP_INSTALL) -e '.[test]'))
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
