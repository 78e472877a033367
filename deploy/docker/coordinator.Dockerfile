# syntax=docker/dockerfile:1
# The coordinator image: the `stackhive` binary (the CLI, `stackhive coordinator`, `token`, `tls`)
# on Debian slim, run as an unprivileged user. No libtorch, no level-2 libraries: those are the
# workers' (worker-gpu.Dockerfile). Build from the repository root:
#
#   docker build -f deploy/docker/coordinator.Dockerfile -t stackhive-coordinator:0.1.0 .
#
# The image listens on 0.0.0.0:50051, which the coordinator refuses without TLS
# (STACKHIVE_TLS_CERT / STACKHIVE_TLS_KEY) unless STACKHIVE_ALLOW_PLAINTEXT=true, and it requires
# bearer tokens there; deploy/compose.yaml and deploy/k8s/ show both wired in.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The whole workspace: cargo reads every member's manifest even to build one package, and sqlx
# embeds migrations/ at compile time. .dockerignore keeps target/ and .venv/ out of the context.
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY data data
COPY spec spec
COPY coordinator coordinator
COPY worker worker
COPY cli cli
COPY ensemble ensemble
COPY report report
COPY trainer trainer
COPY stacker stacker
COPY tests tests
COPY migrations migrations
# Only the CLI crate: it links neither libtorch nor the level-2 libraries. protoc is vendored.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p stackhive-cli \
    && install -D -m 0755 target/release/stackhive /out/stackhive

FROM ${RUNTIME_IMAGE}
# ca-certificates: the coordinator may reach a PostgreSQL that uses a public CA.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The same uid (10001) as the worker image, so both can read one volume of certificates and
# tokens (deploy/compose.yaml). The folders exist here so that a named volume mounted on them
# starts out owned by this user.
RUN groupadd --system --gid 10001 stackhive \
    && useradd --system --uid 10001 --gid stackhive --home-dir /var/lib/stackhive \
        --shell /usr/sbin/nologin stackhive \
    && install -d -o stackhive -g stackhive -m 0750 /var/lib/stackhive /var/lib/stackhive/data \
        /etc/stackhive
COPY --from=build /out/stackhive /usr/local/bin/stackhive
USER 10001:10001
WORKDIR /var/lib/stackhive
# Uploaded datasets live in STACKHIVE_DATA_DIR: coordinators of one cluster must share it.
ENV STACKHIVE_LISTEN=0.0.0.0:50051 \
    STACKHIVE_METRICS_ADDR=0.0.0.0:9464 \
    STACKHIVE_DATA_DIR=/var/lib/stackhive/data \
    RUST_LOG=info
# gRPC (jobs, workers, the standard grpc.health.v1 service, reflection) and Prometheus metrics.
EXPOSE 50051 9464
# The listener accepts connections. A gRPC health probe would need a client with the cluster's
# CA in the image; Kubernetes probes the port the same way (deploy/k8s/coordinator.yaml).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/50051"]
# SIGTERM: stop long-polls and watches, drain requests, exit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["stackhive"]
CMD ["coordinator"]
