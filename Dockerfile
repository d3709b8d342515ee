# tidegauge in a container: a multi-stage build, run as a non-root user on a slim base.
#   docker build -t tidegauge .
#   docker run -p 9877:9877 -v tidegauge-data:/var/lib/tidegauge tidegauge --config /etc/tidegauge/tidegauge.toml
# `cargo xtask test` runs this file's build and install commands as plain commands and starts
# the result as that user (xtask/src/docker.rs): no image registry is needed to check it.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tidegauge
RUN install -D -m 0755 target/release/tidegauge /out/usr/local/bin/tidegauge

FROM debian:bookworm-slim
# CA certificates for https upstreams (rustls reads the system's roots).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/tidegauge --create-home tidegauge
COPY --from=build /out/ /
USER 10001:10001
# The data directory defaults to ./tidegauge-data: keep it on the volume.
WORKDIR /var/lib/tidegauge
VOLUME /var/lib/tidegauge
EXPOSE 9877
ENTRYPOINT ["/usr/local/bin/tidegauge"]
