# The only entry points a user needs. Each target is a script in hack/ that explains itself.
.PHONY: help up down test bench soak crds cluster cluster-down e2e kind-up

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

up: ## Run the pipeline locally in .run/ (PostgreSQL, RabbitMQ, services); idempotent
	@hack/up.sh

down: ## Stop everything `make up` and `make cluster` started
	@hack/down.sh
	@hack/cluster.sh down

test: ## fmt, clippy -D warnings, and every test against private PostgreSQL, RabbitMQ and kube-apiserver
	@hack/test.sh

bench: ## Measure the local pipeline (throughput, latency, freshness, drain, queries, pgbench ceiling)
	@hack/bench.sh

soak: ## Does the consumer stop within its grace period after restarts under load? RUNS (10) of MINUTES (10) on `make up`
	@hack/soak.sh

crds: ## Regenerate the CRD (crds/ and the chart's copy) from the operator's types
	@cargo run -q --locked -p analytics-operator --bin crdgen > crds/analyticspipeline.yaml
	@cp crds/analyticspipeline.yaml charts/analytics-pipeline/crds/analyticspipeline.yaml
	@echo "wrote crds/analyticspipeline.yaml and its copy in charts/analytics-pipeline/crds/"

cluster: ## A real single-node Kubernetes here (kubelet, containerd), images built from this tree; idempotent; MONITORING=1 adds Prometheus, HA=1 CloudNativePG
	@hack/cluster.sh up

cluster-down: ## Stop the node: processes, mounts, iptables chains, bridge
	@hack/cluster.sh down

e2e: ## The user's path on `make cluster`: helm install, the example pipeline, scaling, chaos, rollout, retain; MONITORING=1 adds Prometheus and its checks, HA=1 the CloudNativePG pipeline's failovers
	@hack/e2e.sh

kind-up: ## Create the kind cluster (kind-config.yaml) and deploy everything with skaffold
	@hack/kind-up.sh
