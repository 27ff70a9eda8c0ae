# Container images of the node (`drakkar`) and of the operator (`drakkar-operator`), from one build:
#
#   docker build --target node     -t ghcr.io/drakkar-io/drakkar:0.1.0 .
#   docker build --target operator -t ghcr.io/drakkar-io/drakkar-operator:0.1.0 .
#
# Both run as uid/gid 65532 (what the StatefulSet and the chart's securityContext expect), with a
# read-only root filesystem: the node writes only under its volume (/var/lib/drakkar).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The toolchain is pinned by rust-toolchain.toml; the lock file pins every crate.
RUN cargo build --release --locked --bin drakkar --bin drakkar-operator \
 && cp target/release/drakkar target/release/drakkar-operator /usr/local/bin/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 drakkar \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin drakkar
USER 65532:65532

FROM runtime AS operator
COPY --from=build /usr/local/bin/drakkar-operator /usr/local/bin/drakkar-operator
ENTRYPOINT ["/usr/local/bin/drakkar-operator"]

FROM runtime AS node
COPY --from=build /usr/local/bin/drakkar /usr/local/bin/drakkar
# gRPC (clients and peers), and /metrics, /livez, /readyz.
EXPOSE 7000 9090
ENTRYPOINT ["/usr/local/bin/drakkar"]
CMD ["serve", "--help"]
