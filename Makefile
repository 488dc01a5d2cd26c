# The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash

.PHONY: demo test unit e2e build crds lint clean deny fuzz bench image monitoring

## demo: build everything, start a local control plane, the simulators and the operator,
## apply examples/ and keep running until Ctrl-C.
demo:
	bash scripts/demo.sh

## test: unit tests, then end-to-end tests on a real kube-apiserver (what CI runs).
test:
	bash scripts/test.sh

## bench: end-to-end benchmark on the real control plane (BENCHMARKS.md). Parameters via
## BENCH_N, BENCH_LATENCY_MS, BENCH_CONCURRENCY, BENCH_RESYNC_S, BENCH_QUIET_PERIODS,
## BENCH_PEER=kopf (the kopf peer, installed into target/peer-kopf-venv).
bench:
	cargo build --release --locked --bin secprov-operator
	if [[ "$${BENCH_PEER:-}" == kopf && ! -x target/peer-kopf-venv/bin/kopf ]]; then \
	  python3 -m venv target/peer-kopf-venv && \
	  target/peer-kopf-venv/bin/pip install -q -r benches/peer-kopf/requirements.txt; fi
	cargo bench --locked --bench operator
	cargo bench --locked --bench scheduling

unit:
	cargo test --workspace --lib --bins

build:
	cargo build --locked --workspace

## crds: regenerate crds/ (and its copies in deploy/ and the Helm chart) from the Rust types.
crds:
	cargo run --quiet -- crd > crds/secprov.dev.yaml
	cp crds/secprov.dev.yaml deploy/crds/secprov.dev.yaml
	cp crds/secprov.dev.yaml deploy/helm/secprov-operator/crds/secprov.dev.yaml

## image: the container image as an OCI archive, target/image/secprov-operator.oci.tar, built
## without a container engine (docker load / podman load / kind load image-archive accept it).
image:
	bash scripts/image.sh

## monitoring: copy deploy/monitoring/ (alerts, dashboard) into the Helm chart.
monitoring:
	cp deploy/monitoring/prometheusrule.yaml deploy/helm/secprov-operator/files/prometheusrule.yaml
	cp deploy/monitoring/grafana-dashboard.json deploy/helm/secprov-operator/files/grafana-dashboard.json

## deny: licences, bans and sources of every dependency (deny.toml).
deny:
	cargo deny check bans licenses sources

## fuzz: run every fuzz target for FUZZ_SECONDS (default 20); needs nightly + cargo-fuzz.
fuzz:
	bash scripts/fuzz.sh

lint:
	cargo fmt --check
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	-bash tests/controlplane/down.sh target/test-controlplane
	-bash tests/controlplane/down.sh target/demo-controlplane
	cargo clean
