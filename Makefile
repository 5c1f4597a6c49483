# Set-up is two commands: `make demo` and `make test`. Both bootstrap .venv first (idempotently).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Packages that must import without TensorFlow, and the layers above the runtime: all type-checked.
TF_FREE := src/sigserve/errors.py src/sigserve/interfaces.py src/sigserve/cpus.py src/sigserve/saved_model \
	src/sigserve/codec src/sigserve/client src/sigserve/storage src/sigserve/requestlog \
	src/sigserve/openapi
TYPED := $(TF_FREE) src/sigserve/service src/sigserve/manager src/sigserve/batching src/sigserve/server \
	src/sigserve/integrations

.PHONY: venv v2venv test lint typecheck demo protos bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# The real TF Serving client stubs, for compatibility tests. Its only hard dependency is
	# tensorflow itself (installed above as tensorflow-cpu), hence --no-deps.
	$(PY) -m pip install -q --no-deps 'tensorflow-serving-api>=2.16'
	touch $(STAMP)

# The V2 clients (tritonclient, kserve: tests/v2clients/requirements.txt) pin protobuf<7 and their own
# grpcio, so they live in .venv-v2 and the V2 tests run them as subprocesses. MLServer's wheel comes
# without its dependencies (they conflict with kserve's): only its generated protos are imported, to
# test that sigserve shares a process with them. First run about 25 s; --no-compile saves half.
V2VENV := .venv-v2
V2STAMP := $(V2VENV)/.installed

v2venv: $(V2STAMP)

$(V2STAMP): tests/v2clients/requirements.txt
	test -x $(V2VENV)/bin/python || $(PYTHON) -m venv $(V2VENV)
	$(V2VENV)/bin/pip install -q --no-compile -r tests/v2clients/requirements.txt
	$(V2VENV)/bin/pip install -q --no-compile --no-deps 'mlserver>=1.7'
	touch $(V2STAMP)

lint: venv
	$(VENV)/bin/ruff check src tests bench scripts examples
	$(VENV)/bin/ruff format --check src tests bench scripts examples
	$(VENV)/bin/mypy $(TYPED)

test: lint v2venv
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

demo: venv
	$(PY) examples/demo.py

# Regenerates the committed *_pb2 modules. Uses grpcio-tools 1.74 (protobuf 6.31 gencode) in a
# throwaway venv so that the generated code runs on protobuf 6.31+ as well as 7.x.
protos:
	test -x .venv-protoc/bin/python || $(PYTHON) -m venv .venv-protoc
	.venv-protoc/bin/pip install -q 'grpcio-tools==1.74.0'
	.venv-protoc/bin/python scripts/gen_protos.py

# The peers (KServe) pin many dependencies of their own, so they live in .venv-bench, not .venv;
# the benchmarks start them from there. The `bench` extra in pyproject.toml names them. The C load
# generators wrk and h2load (Debian: wrk, nghttp2-client) are used when installed (bench/loadgen.py).
bench: venv
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -q 'kserve>=0.13'
	for b in bench/*.py; do [ $$b = bench/loadgen.py ] || $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(V2VENV) .venv-protoc .venv-bench build dist src/*.egg-info
