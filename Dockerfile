# syntax=docker/dockerfile:1
# One build for the workspace; one small image per binary:
#   docker build --target command  -t analytics-command .     (likewise consumer, query, operator)
# The runtime image is distroless (no shell) and runs as the non-root user 65532. Base images are build
# arguments; dependencies are compiled in their own cached layer (cargo-chef), so a source change only
# rebuilds the workspace crates.
#
# Binaries built elsewhere (hack/images.sh, for the local cluster) skip the Rust stages entirely:
#   docker buildx build --build-arg BINARIES=prebuilt --build-context release-binaries=target/release \
#     --target command -t analytics-command .
#   buildah bud --build-arg BINARIES=prebuilt --build-context release-binaries=target/release --target command .
# The directory must hold command-service, consumer-service, query-service, operator and healthcheck, built
# for the runtime image's glibc (Debian 12). Without the argument, `docker build` compiles them as above;
# BuildKit and buildah build only the stages the target needs, so the prebuilt stage is never touched then.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARIES=builder

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

FROM scratch AS prebuilt
# release-binaries is a named build context (--build-context), not a stage, which the linter cannot know.
# hadolint ignore=DL3022
COPY --from=release-binaries command-service consumer-service query-service operator healthcheck /src/target/release/

# What the images copy their binaries from: the builder above, or the prebuilt binaries. (The WORKDIR gives
# the stage an instruction: buildah 1.28 leaks a working container for a stage without one.)
FROM ${BINARIES} AS binaries
WORKDIR /src/target/release

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=binaries /src/target/release/healthcheck /usr/local/bin/healthcheck
USER 65532:65532

FROM runtime AS command
COPY --from=binaries /src/target/release/command-service /usr/local/bin/command-service
# The API, and the admin port (/healthz, /readyz, /metrics).
EXPOSE 8080 8090
HEALTHCHECK CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8090/healthz"]
ENTRYPOINT ["/usr/local/bin/command-service"]
CMD ["serve"]

FROM runtime AS consumer
COPY --from=binaries /src/target/release/consumer-service /usr/local/bin/consumer-service
EXPOSE 8082
HEALTHCHECK CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8082/healthz"]
ENTRYPOINT ["/usr/local/bin/consumer-service"]
CMD ["serve"]

FROM runtime AS query
COPY --from=binaries /src/target/release/query-service /usr/local/bin/query-service
EXPOSE 8081 8091
HEALTHCHECK CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8091/healthz"]
ENTRYPOINT ["/usr/local/bin/query-service"]

FROM runtime AS operator
COPY --from=binaries /src/target/release/operator /usr/local/bin/operator
EXPOSE 8080
HEALTHCHECK CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/operator"]
