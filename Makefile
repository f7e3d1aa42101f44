# enclave-kms: one command each (STYLE.md rule 15).
# Every cargo call uses --locked: the committed Cargo.lock is what CI and releases build.

CARGO ?= cargo

.PHONY: all build test lint fmt kms-sim

all: build

# Builds every crate and binary of the workspace (debug profile).
build:
	$(CARGO) build --workspace --locked --all-targets

# The test command (README, .ci/run): unit tests of every crate, the attestation test
# vectors, the CMS fixture made by OpenSSL, and the integration tests that start the real
# kms-sim binary and talk to it with the real aws-sdk-kms client.
test:
	$(CARGO) test --workspace --locked --all-targets
	$(CARGO) test --workspace --locked --doc

# Lint floor (STYLE.md rule 2): formatting and clippy with warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Rewrites the tree in rustfmt's style.
fmt:
	$(CARGO) fmt --all

# Runs the KMS emulator in the foreground on 127.0.0.1:4566 with state under ./.sim
# (a fresh simulated Nitro CA is created there on first use).
kms-sim:
	$(CARGO) run --locked -p kms-sim --bin kms-sim -- --listen 127.0.0.1:4566 --state-dir .sim/kms --attestation-root .sim/ca/root.pem
