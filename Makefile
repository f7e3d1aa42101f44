# enclave-kms: one command each (STYLE.md rule 15).
# Every cargo call uses --locked: the committed Cargo.lock is what CI and releases build.
# CARGO_TARGET_DIR is honoured (CI points it at a cache outside the clone).

CARGO  ?= cargo
PYTHON ?= python3
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
VENV   := $(CURDIR)/.venv
KMS_REGION  ?= us-east-1
KMS_KEY_ARN ?=

.PHONY: all build test test-rust test-e2e lint fmt demo sim bench fuzz eif venv clean-sim

all: build

# Builds every crate and binary of the workspace (debug profile).
build:
	$(CARGO) build --workspace --locked --all-targets

# The test command (README, .ci/run): every Rust test (units, the real AWS attestation
# vectors, the OpenSSL CMS fixtures, kms-sim driven by the real aws-sdk-kms, the `ekms
# sim` smoke test), the production build without the simulated NSM, and the Python
# end-to-end interoperability tests (eth-account, solders, PyNaCl) against the real
# binaries.
test: test-rust test-e2e

test-rust: build
	$(CARGO) test --workspace --locked --all-targets
	$(CARGO) test --workspace --locked --doc
	# The production attestation crate (no simulation feature) must pass on its own, and
	# a production enclave (no simulated NSM compiled in) must compile. `check`, not
	# `build`: a build would replace target/debug/ekms-enclave, which the simulation runs.
	$(CARGO) test --locked -p attestation
	$(CARGO) check --locked -p ekms-enclave --no-default-features --bins

test-e2e: build venv
	cd e2e && EKMS_BIN_DIR=$(TARGET_DIR)/debug $(VENV)/bin/pytest -q

# Python environment for the interop tests and the demo (packages from PyPI, pinned).
venv: $(VENV)/.installed
$(VENV)/.installed: requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

# Lint floor (STYLE.md rule 2): formatting and clippy with warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Rewrites the tree in rustfmt's style.
fmt:
	$(CARGO) fmt --all

# The quick start: builds, starts the simulation in ./.demo, creates an EVM and a Solana
# key with policies, signs a real EIP-1559 transaction and a Solana transfer, shows a
# refused out-of-policy request, verifies the signatures with eth-account and solders, the
# key's address with `ekms keys verify` and the attestation document with `ekms attestation
# verify`, and stops.
demo: build venv
	EKMS_BIN_DIR=$(TARGET_DIR)/debug $(VENV)/bin/python scripts/demo.py

# Runs the whole simulation in the foreground with state in ./.sim (Ctrl-C stops it);
# talk to it with `ekms --socket .sim/ekms.sock ...`.
sim: build
	$(TARGET_DIR)/debug/ekms sim --state-dir .sim

# End-to-end signatures per second (EVM, Solana; 1 and 64 in flight) beside the raw
# in-process signing rates of the same run, release build. Results: docs/bench.md.
bench:
	$(CARGO) build --release --workspace --locked
	$(TARGET_DIR)/release/ekms-bench --bin-dir $(TARGET_DIR)/release

# Every decoder of untrusted bytes under libFuzzer for FUZZ_SECS each (STYLE.md rule 14):
# frames, attestation documents, CMS envelopes, EVM and Solana payloads, policies. Needs
# the nightly toolchain and `cargo install cargo-fuzz --locked`; see fuzz/README.md.
FUZZ_SECS ?= 60
fuzz:
	for t in frame attestation cms evm solana policy erc20_calldata eip712 spl_token compute_budget policy_v2 offchain_message; do \
	  mkdir -p fuzz/corpus/$$t && \
	  cargo +nightly fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- -max_total_time=$(FUZZ_SECS) || exit 1; \
	done

# Builds the enclave image file (EIF) for AWS Nitro Enclaves. Needs a Docker engine and
# nitro-cli (an EC2 host with Nitro Enclaves enabled); see docs/nitro.md. Prints the
# PCR0/1/2 that the KMS key policy must require. Usage:
#   make eif KMS_REGION=us-east-1 KMS_KEY_ARN=arn:aws:kms:us-east-1:ACCOUNT:key/ID
eif:
	docker build -f Dockerfile.enclave --build-arg KMS_REGION=$(KMS_REGION) --build-arg KMS_KEY_ARN=$(KMS_KEY_ARN) -t enclave-kms-enclave:latest .
	nitro-cli build-enclave --docker-uri enclave-kms-enclave:latest --output-file ekms-enclave.eif

clean-sim:
	rm -rf .sim .demo
