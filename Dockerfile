# One image for every hixbus process: `docker run hixbus <subcommand>`.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hixbus && cp target/release/hixbus /usr/local/bin/hixbus

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 hixbus
COPY --from=build /usr/local/bin/hixbus /usr/local/bin/hixbus
USER hixbus
WORKDIR /home/hixbus
ENTRYPOINT ["hixbus"]
