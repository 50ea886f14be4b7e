# agent-pipeline's services as separate processes on a Kafka-compatible broker, as the original
# ran them, plus the embedded default and the tests. Each Kafka target sets AGENT_BUS=kafka; run
# the service targets in terminals of their own (make broker, make planner, make worker, …).
#
#   make broker                                      a local broker (tansu), in ./.broker/
#   make planner | worker | orchestrator | ci-monitor | web
#   make worker INSTANCE=1 INSTANCES=2               the second of two workers
#   make send TEXT="Write a tiny Python program that prints 'Hello Earthling'"
#   make replay TASK_ID=<id> STEP=implement@v1 REASON="try again"
#   make run                                         everything in one process, no broker
#   make test                                        the whole test suite
#
# The other settings (OPENAI_API_KEY, topics, KAFKA_*, WEB_ADDR …) come from the environment or
# config.local.json, as for agent-host itself; see the README.

REDPANDA_BROKERS ?= 127.0.0.1:9092
DATA_DIR ?= ./data
AGENT_HOST ?= cargo run --release -q -p agent-host --
export REDPANDA_BROKERS
export DATA_DIR
# Handed to the recipes through the environment, so that quotes and `$` in them stay text.
export TEXT TASK_ID STEP REASON

# The listener of `make broker`.
BROKER_URL ?= tcp://127.0.0.1:9092
# `--instance I --instances N` for `make worker` when INSTANCE or INSTANCES is given.
WORKER_SHARE = $(if $(INSTANCE),--instance $(INSTANCE)) $(if $(INSTANCES),--instances $(INSTANCES))

.PHONY: help broker planner worker orchestrator ci-monitor web send replay run test

help:
	@sed -n '1,/^$$/p' Makefile | sed 's/^# \{0,1\}//'

broker:
	@command -v tansu >/dev/null 2>&1 || { \
	  echo "tansu is not installed. Install it with:"; \
	  echo "  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql"; \
	  echo "or run Redpanda in a container instead:"; \
	  echo "  docker run -d --name redpanda -p 9092:9092 docker.redpanda.com/redpandadata/redpanda:latest redpanda start --mode dev-container --smp 1 --kafka-addr 0.0.0.0:9092 --advertise-kafka-addr 127.0.0.1:9092"; \
	  exit 1; }
	mkdir -p .broker
	cd .broker && tansu broker --listener-url $(BROKER_URL) --advertised-listener-url $(BROKER_URL) --storage-engine sqlite://tansu.db

planner:
	AGENT_BUS=kafka $(AGENT_HOST) planner

worker:
	AGENT_BUS=kafka $(AGENT_HOST) worker $(WORKER_SHARE)

orchestrator:
	AGENT_BUS=kafka $(AGENT_HOST) orchestrator

ci-monitor:
	AGENT_BUS=kafka $(AGENT_HOST) ci-monitor

web:
	AGENT_BUS=kafka $(AGENT_HOST) web

send:
	@test -n "$$TEXT" || { echo 'make send needs the task: make send TEXT="Write a tiny Python program that prints '"'"'Hello Earthling'"'"'"' >&2; exit 2; }
	AGENT_BUS=kafka $(AGENT_HOST) send --text "$$TEXT" --wait

replay:
	@test -n "$$TASK_ID" || { echo 'make replay needs the task: make replay TASK_ID=<id> STEP=implement@v1 [REASON="…"]' >&2; exit 2; }
	@test -n "$$STEP" || { echo 'make replay needs the step: make replay TASK_ID=<id> STEP=implement@v1 [REASON="…"] (steps: design@v1, implement@v1, test@v1, review@v1)' >&2; exit 2; }
	AGENT_BUS=kafka $(AGENT_HOST) replay --task-id "$$TASK_ID" --step "$$STEP" $${REASON:+--reason "$$REASON"}

run:
	$(AGENT_HOST) run

test:
	scripts/test-all
