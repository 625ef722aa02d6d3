# mesh-node in a container: built with the Rust toolchain, run on a small Debian as a non-root
# user. Build and run (see README, "Deployment"):
#
#   docker build -t mesh-node .
#   docker run --rm -p 4000:4000/tcp -p 4000:4000/udp -v mesh-data:/var/lib/mesh \
#     mesh-node --node-id node-1 --advertise <host ip>:4000 --capabilities counter,account

# The toolchain of the build; the workspace's rust-version (Cargo.toml) is the oldest it supports.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts: the registry and the target directory survive between builds of the image, so a
# change to one crate rebuilds that crate, not every dependency. The binary is copied out of the
# cache mount, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mesh-node \
    && cp target/release/mesh-node /usr/local/bin/mesh-node

FROM debian:bookworm-slim
# ca-certificates: for `--store postgres://` and HTTPS peers whose certificates chain to a public CA.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 mesh \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mesh --create-home mesh
COPY --from=build /usr/local/bin/mesh-node /usr/local/bin/mesh-node
USER 10001:10001
WORKDIR /var/lib/mesh
# In a container the node listens on every interface; other nodes must then be told where to
# reach it: mesh-node refuses to start without --advertise (MESH_ADVERTISE) <routable ip>:4000.
ENV MESH_LISTEN=0.0.0.0:4000 \
    MESH_DATA_DIR=/var/lib/mesh/data
# The embedded state store (--data-dir): durable actors' state outlives the container.
VOLUME /var/lib/mesh
# HTTP (the API and node-to-node hops) on TCP, gossip on UDP: the same port number.
EXPOSE 4000/tcp 4000/udp
# SIGTERM (docker stop, Kubernetes) drains the node: it hands its actors over and leaves.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mesh-node"]
