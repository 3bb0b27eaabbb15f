# The one smolpaws image: the operator runs it, and each sandbox's init
# container runs `/smolpaws install` from it to copy the agent into the
# sandbox image. A static musl binary, and git for the controller's pushes.
#
#   docker build -t ghcr.io/smolpaws/smolpaws:0.1.0 .

FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
RUN cargo build --profile dist --locked --no-default-features --target x86_64-unknown-linux-musl --bin smolpaws \
    && cp target/x86_64-unknown-linux-musl/dist/smolpaws /smolpaws

# git, for the controller: it checks each agent's bundle and pushes it.
# Sandboxes take only the static binary from this image.
FROM docker.io/library/alpine:3.22
RUN apk add --no-cache git
COPY --from=build /smolpaws /smolpaws
USER 65532:65532
ENTRYPOINT ["/smolpaws"]
