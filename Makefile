# yt8m-tfx: `make demo` runs the pipeline on generated data, `make test` runs the test suite.
# Both create .venv with the pinned TFX stack first (scripts/bootstrap.sh; a no-op once it is installed).
PY := .venv/bin/python
DEMO_DATA := data/demo
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: venv demo test format bench bench-scale bench-scale-sim bench-quality bench-dask clean

venv:
	@bash scripts/bootstrap.sh

$(DEMO_DATA)/synth.json: pipeline/synth.py | venv  # regenerated when the generator changes
	$(PY) -m pipeline.cli synth --out $(DEMO_DATA) --videos 3000 --classes 100 --frames 20 --seed 0

demo: venv $(DEMO_DATA)/synth.json
	$(PY) -m pipeline.cli run --config configs/demo.yaml
	$(PY) -m pipeline.cli report --config configs/demo.yaml --out yt8m_home/report.html

test: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(PY) -m pytest

format: venv
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

bench: venv  # the L1/L2/student quality tables read the latest `make demo` run from yt8m_home
	$(PY) -m benchmarks.ingest_bench
	$(PY) -m benchmarks.l1_bench
	$(PY) -m benchmarks.l2_bench
	$(PY) -m benchmarks.student_bench

bench-scale: venv  # the whole pipeline at 10k/30k/100k videos x 3862 classes + 10k frame-level (about 1.5 h on 2 cores)
	$(PY) -m benchmarks.scale_bench

bench-scale-sim: venv  # L2Merge..evaluation on synthetic L1 predictions, 100k/200k/400k videos x 20 models x 3862
	$(PY) -m benchmarks.scale_sim_bench  # classes; refused when the disk cannot hold a size (BENCHMARKS.md)

bench-dask: venv  # every Beam executor under the DaskRunner (2 worker processes) vs the DirectRunner (~6 min on 2 cores)
	$(PY) -m benchmarks.dask_bench

bench-quality: venv  # stack, student and soft labels vs best L1 and the oracle, 17k generated videos (~2.5 h on 2 cores)
	$(PY) -m benchmarks.quality_bench

clean:
	rm -rf yt8m_home $(DEMO_DATA) bench_out
