# Two commands do everything on a fresh Debian 12 machine:
#   make demo   build, fetch the default model, run on the built-in demo cameras
#   make test   formatting, lints and the whole test suite
CARGO ?= cargo
# The CUDA kernels' source, compiled for the host, checked against the CPU ops.
TEST_FEATURES = --features vigil-inference/cuda-emulation

.PHONY: deps build models demo test deb deb-cuda

# The Debian packages (release builds); see packaging/README.md.
deb: models
	$(CARGO) deb -p vigil --strip

deb-cuda: models
	packaging/build-cuda-deb.sh

deps:
	scripts/install-deps.sh

build: deps
	$(CARGO) build --release -p vigil

models: build
	VIGIL=target/release/vigil scripts/fetch-models.sh

demo: models
	target/release/vigil demo

test: deps
	npm ci --silent --no-audit --no-fund --prefix inference/tests/support/jpeg-decode
	npm ci --silent --no-audit --no-fund --prefix appliance/tests/support/browser
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets $(TEST_FEATURES) -- -D warnings
	$(CARGO) test --workspace $(TEST_FEATURES)
	scripts/fuzz-smoke.sh
	packaging/test-deb.sh
