# The two commands of the README: `make demo` and `make test`. Each sets up .venv first
# (scripts/setup.sh: nothing is reinstalled when .venv already has what the target needs).
# `make test-fast` skips the tests marked slow (longer than ~10 s) and needs only the test extra.
.PHONY: setup demo test test-fast bench clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/rollfit demo --output rollfit_demo --overwrite

test:
	bash scripts/setup.sh test,onnx,ray
	.venv/bin/python -m pytest -q

test-fast:
	bash scripts/setup.sh test
	.venv/bin/python -m pytest -q -m "not slow"

bench: setup
	.venv/bin/python benchmarks/bench_train.py
	.venv/bin/python benchmarks/bench_load.py

clean:
	rm -rf rollfit_demo .pytest_cache
