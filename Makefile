# tailforge — one release profile for everything (tests, demo, benches), in a
# persistent target directory outside the clone so rebuilds are incremental.
export CARGO_TARGET_DIR ?= /var/tmp/tailforge-target
CARGO ?= cargo
BIN := $(CARGO_TARGET_DIR)/release/tailforge
DEMO_DIR ?= data/demo
## FEATURES: cargo features for every build and test line alike (one build,
## one profile), e.g. `make test FEATURES=ballista`. Off by default: the
## Ballista client rebuilds DataFusion with its default features and adds
## gRPC (BENCHMARKS.md, "Ballista in the build").
FEATURES ?=
FEATURE_FLAGS := $(if $(FEATURES),--features $(FEATURES))

.PHONY: all setup build test test-ballista report-check reliability demo bench bench-analyze bench-train bench-train-amazon bench-train-speed bench-generate bench-generate-ablation bench-generate-ideal bench-scale config-docs fmt lint clean-data

all: build

## setup: apt packages, models (verified), tools venv. Idempotent.
setup:
	bash scripts/setup.sh

## build: the tailforge binary (release profile).
build:
	$(CARGO) build --release --workspace --bins $(FEATURE_FLAGS)

## test: unit tests and end-to-end tests of the real binary on real data.
test: setup build
	$(CARGO) test --release --workspace $(FEATURE_FLAGS)

## test-ballista: analyze on a Ballista cluster (a scheduler and two executors on 127.0.0.1,
## in the test process) against the local engine, on demo data and MovieLens-100k. docs/ballista.md.
test-ballista: setup
	$(MAKE) build FEATURES=ballista
	$(CARGO) test --release --workspace --features ballista --test ballista

## report-check: a run's report.html rendered by headless chromium (tests/tests/report.rs: it renders,
## shows the headline numbers, catalog text stays text); REPORT=path/report.html also checks that report.
report-check: setup build
	$(CARGO) test --release --workspace $(FEATURE_FLAGS) --test report
	@if [ -n "$(REPORT)" ]; then bash scripts/report-check.sh "$(REPORT)"; fi

## reliability: the crash harness with 20 kill points (TAILFORGE_CRASH_POINTS, seed
## TAILFORGE_CRASH_SEED), two runs at once, a full disk, no secret in any output.
## `make test` runs the same tests with 4 kill points. docs/reliability.md.
TAILFORGE_CRASH_POINTS ?= 20
reliability: setup build
	TAILFORGE_CRASH_POINTS=$(TAILFORGE_CRASH_POINTS) $(CARGO) test --release --workspace $(FEATURE_FLAGS) --test crash --test secrets -- --nocapture --test-threads 1

## demo: set up, build, generate the synthetic shop, run the pipeline on it.
demo: setup build
	$(BIN) demo-data --users 5000 --items 2000 --events 200000 --seed 42 --out $(DEMO_DIR)/input
	$(BIN) run pipelines/demo.toml

## bench: all benchmarks (results go to BENCHMARKS.md by hand, with the machine).
bench: bench-analyze bench-train bench-train-amazon bench-generate

## bench-train: candle SASRec vs a PyTorch SASRec peer on MovieLens-100k; variant ablations.
bench-train: setup build
	bash benches/train.sh

## bench-train-amazon: the cold-tail ablation on Amazon Scientific (reference scorers, variants × 2 seeds, PyTorch peer).
bench-train-amazon: setup build
	bash benches/train-amazon.sh

## bench-generate-ablation: grounded generation on Amazon Scientific: grounding per prompt, NDCG with catalog vs + generated text (2 seeds).
bench-generate-ablation: setup build
	bash benches/generate-ablation.sh

## bench-train-speed: seconds per epoch, candle vs the PyTorch peer, interleaved rounds at 1 and 2 threads.
bench-train-speed: setup build
	bash benches/train-speed.sh

## bench-analyze: tailforge analyze vs DuckDB on 10M demo events; 100M under 4 GB.
bench-analyze: setup build
	bash benches/analyze.sh

## bench-generate-ideal: tailforge generate's wall time vs an ideal batch of the same model, parallel 1/4/8/16 x threads 1/2.
bench-generate-ideal: setup build
	bash benches/generate-ideal.sh

## bench-scale: analyze at 10M users x 10 events over 1M items (wall, RSS, spill); train id at 100k users x 1M items.
bench-scale: setup build
	bash benches/scale.sh

## bench-generate: tailforge generate tok/s at parallel 1/4/8/16 vs a bare llama_decode replay (C++ driver).
bench-generate: setup build
	bash benches/generate.sh

## config-docs: docs/config.md from the config structs' doc comments and defaults
## (crates/core/src/config*); a core test fails while the committed page is stale.
config-docs:
	$(CARGO) run --release --quiet -p tailforge-core --example config_docs > docs/config.md.tmp
	mv docs/config.md.tmp docs/config.md

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --release --workspace --all-targets $(FEATURE_FLAGS) -- -D warnings

clean-data:
	rm -rf data/demo bench-out
