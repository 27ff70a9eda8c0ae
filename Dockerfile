# Container images of the node (`drakkar`) and of the operator (`drakkar-operator`), from one build:
#
#   docker build --target node     -t ghcr.io/drakkar-io/drakkar:0.1.0 .
#   docker build --target operator -t ghcr.io/drakkar-io/drakkar-operator:0.1.0 .
#
# The root filesystems come from images/rootfs.sh, the same recipe the real-pod tests use to build their
# images without Docker (images/image.py; USER, ENTRYPOINT, CMD and EXPOSE below agree with
# images/node.json and images/operator.json, which tests/tests/images.rs checks). Both run as uid/gid
# 65532 (what the StatefulSet and the chart's securityContext expect), with a read-only root filesystem:
# the node writes only under its volume (/var/lib/drakkar).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The toolchain is pinned by rust-toolchain.toml; the lock file pins every crate.
RUN cargo build --release --locked --bin drakkar --bin drakkar-operator \
 && images/rootfs.sh target/release/drakkar /rootfs/node \
 && images/rootfs.sh target/release/drakkar-operator /rootfs/operator \
 && chown 65532:65532 /rootfs/node/var/lib/drakkar /rootfs/operator/var/lib/drakkar

FROM scratch AS operator
COPY --from=build /rootfs/operator /
USER 65532:65532
# /healthz, /readyz and /metrics.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/drakkar-operator"]

FROM scratch AS node
COPY --from=build /rootfs/node /
USER 65532:65532
# gRPC (clients and peers), and /metrics, /livez, /readyz.
EXPOSE 7000 9090
ENTRYPOINT ["/usr/local/bin/drakkar"]
CMD ["serve", "--help"]
