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

.PHONY: install demo test bench soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

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

clean:
	rm -rf $(VENV) out
