# The two commands (README.md):  make run   |   make test
# Both install missing Debian packages, configure (Ninja + ccache) and build first.
BUILD ?= build
PYTHON ?= /usr/bin/python3
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CONFIGURE = cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DPython_EXECUTABLE=$(PYTHON) $(CMAKE_FLAGS)

.PHONY: all deps configure build run test test-cpp test-python test-asan bench clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	$(CONFIGURE)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# The main job: what this machine and build offer, then one epoch of Fashion-MNIST training.
run: build
	$(BUILD)/runtime/tessera info
	$(BUILD)/runtime/tessera train --model cnn --precision bf16 --epochs 1 --metrics $(BUILD)/train_metrics.jsonl

test: build
	$(MAKE) --no-print-directory test-cpp test-python

test-cpp:
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-python:
	PYTHONPATH=$(abspath $(BUILD))/python TESSERA_BUILD_DIR=$(abspath $(BUILD)) \
		$(PYTHON) -m pytest -q tests/python

# Unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer (CI runs this too).
test-asan: deps
	$(MAKE) --no-print-directory build BUILD=build-asan \
		CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Debug -DTESSERA_SANITIZE_ADDRESS=ON -DTESSERA_BUILD_PYTHON=OFF -DTESSERA_BUILD_BENCHMARKS=OFF -DCMAKE_CXX_FLAGS_DEBUG=-O1"
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS) -L unit

# Benchmarks with their peers (oneDNN, PyTorch); not part of the tests.
bench:
	@bash scripts/install-deps.sh --bench
	$(CONFIGURE)
	cmake --build $(BUILD) -j $(JOBS)
	@ls $(BUILD)/benchmarks/ 2>/dev/null | grep -E '_bench$$' | sed 's|^|  run: $(BUILD)/benchmarks/|'

clean:
	rm -rf $(BUILD) build-asan
