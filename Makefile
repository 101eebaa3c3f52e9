# Two commands on a fresh machine:
#   make demo   install, then generate a 60-second video with three prompt switches (out/demo.mp4)
#   make test   install, then run the test suite (the same command CI runs)
#
# TORCH picks the PyTorch build. The default is the CPU wheel; on a GPU machine install your CUDA
# build of torch into the venv first, or run `make install TORCH=torch`.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser-deps demo test bench soak retrain clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Debian packages for the live-preview tests (headless Chromium + ChromeDriver, Xvfb for the Tk
# window); those tests skip with the reason when they are missing. Needs root (or sudo) and apt.
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v Xvfb >/dev/null; then \
		echo "chromium, chromedriver and Xvfb are installed"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver xvfb >/dev/null; \
	else \
		echo "browser-deps: run as root on Debian/Ubuntu (apt-get install chromium chromium-driver xvfb); the browser tests skip without them"; \
	fi

demo: install
	mkdir -p out
	$(BIN)/longvid generate --timeline prompts/example.yaml --out out/demo.mp4 --seed 0 --overwrite

test: install
	$(BIN)/python -m pytest

bench: install
	mkdir -p runs
	$(BIN)/longvid bench --minutes 1 --json runs/bench-1min.json
	$(BIN)/longvid bench --minutes 10 --json runs/bench-10min.json
	$(BIN)/longvid bench --seconds 10 --compare --compare-seconds 60 --json runs/bench-compare.json

soak: install
	$(BIN)/python scripts/soak.py --minutes 10 --out runs/soak

# The built-in models from nothing: the base (configs/longvid-shapes.yaml), then the default label
# model grown from it (about 12.9 hours; resumable: run it again after a stop). docs/training.md
retrain: install
	$(BIN)/python scripts/retrain.py --out runs/retrain

clean:
	rm -rf $(VENV) out
