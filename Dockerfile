# Multi-stage build: compile in the Rust image, run as non-root on slim Debian.
FROM rust:1-bookworm AS build
RUN apt-get update -qq && apt-get install -y -qq cmake pkg-config libssl-dev >/dev/null
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --bin switchyard && strip target/release/switchyard

FROM debian:bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/switchyard --create-home switchyard \
 && install -d -o switchyard /var/lib/switchyard/state
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY conf /etc/switchyard
USER switchyard
WORKDIR /var/lib/switchyard
EXPOSE 4000 4001
ENV RUST_LOG=info
# SIGTERM drains in-flight requests (see server.grace_period)
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["serve", "-c", "/etc/switchyard/docker.yaml"]
