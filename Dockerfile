# syntax=docker/dockerfile:1
# One build for the workspace; one small image per binary:
#   docker build --target command  -t analytics-command .     (likewise consumer, query, operator)
# The runtime image is distroless (no shell) and runs as the non-root user 65532. Base images are build
# arguments; dependencies are compiled in their own cached layer (cargo-chef), so a source change only
# rebuilds the workspace crates.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked \
      -p command-service -p consumer-service -p query-service -p analytics-kit \
      --bin command-service --bin consumer-service --bin query-service --bin healthcheck \
 && cargo build --release --locked -p analytics-operator --bin operator

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=builder /src/target/release/healthcheck /usr/local/bin/healthcheck
USER 65532:65532

FROM runtime AS command
COPY --from=builder /src/target/release/command-service /usr/local/bin/command-service
EXPOSE 8080
HEALTHCHECK CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/command-service"]
CMD ["serve"]

FROM runtime AS consumer
COPY --from=builder /src/target/release/consumer-service /usr/local/bin/consumer-service
EXPOSE 8082
HEALTHCHECK CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8082/healthz"]
ENTRYPOINT ["/usr/local/bin/consumer-service"]
CMD ["serve"]

FROM runtime AS query
COPY --from=builder /src/target/release/query-service /usr/local/bin/query-service
EXPOSE 8081
HEALTHCHECK CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8081/healthz"]
ENTRYPOINT ["/usr/local/bin/query-service"]

FROM runtime AS operator
COPY --from=builder /src/target/release/operator /usr/local/bin/operator
EXPOSE 8080
HEALTHCHECK CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/operator"]
