# syntax=docker/dockerfile:1
# The Sneakernet image: the `sneakernet` binary (every service role, `migrate`, the operator
# commands) and `kiosk-agent`, on a distroless runtime with no shell, no package manager and
# no build tools, running as a non-root user.
#
#   docker build -t sneakernet:dev --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm -p 50051:50051 sneakernet:dev                       # every role, SQLite in /var/lib/sneakernet
#   docker run --rm sneakernet:dev serve --role gateway                 # one role (the Helm chart's way)
#
# Only `-p sneakernet -p sneakernet-kiosk-agent` is built: a build of the whole workspace would
# pull the integration tests' fault-injection points (failpoints) into the binaries.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

# --- cargo-chef: dependencies build in their own layer, rebuilt only when Cargo.lock or a
# manifest changes, not on every source change.
FROM rust:${RUST_VERSION}-slim-trixie AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# No system protoc: the protos compile with protox (pure Rust). aws-lc-sys and the bundled
# SQLite need only the C compiler the slim Rust image carries.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
      -p sneakernet -p sneakernet-kiosk-agent
COPY . .
RUN cargo build --release --locked -p sneakernet -p sneakernet-kiosk-agent \
 && mkdir -p /out/bin /out/data \
 && cp target/release/sneakernet target/release/kiosk-agent /out/bin/

# --- runtime: glibc and libgcc only (the binaries link nothing else dynamically).
FROM gcr.io/distroless/cc-debian13:nonroot AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
# Where the sources live (no public repository is fixed yet): --build-arg SOURCE=<url>.
ARG SOURCE=""
LABEL org.opencontainers.image.title="sneakernet" \
      org.opencontainers.image.description="Sneakernet: the backend of kiosks lending pre-loaded portable hard drives (sneakernet serve --role auth|orders|content|gateway) and the kiosk agent" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian13:nonroot"
COPY --from=builder /out/bin/sneakernet /out/bin/kiosk-agent /usr/local/bin/
# The data directory (SQLite of the embedded default, a generated orders key) belongs to the
# image's non-root user; the chart mounts an emptyDir there and keeps the root filesystem
# read-only.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/sneakernet
ENV SNEAKERNET_LISTEN=0.0.0.0:50051 \
    SNEAKERNET_DATA_DIR=/var/lib/sneakernet
USER 65532:65532
WORKDIR /var/lib/sneakernet
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/sneakernet"]
CMD ["serve", "--role", "auth,orders,content,gateway"]
