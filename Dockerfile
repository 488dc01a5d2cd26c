# syntax=docker/dockerfile:1
# Multi-stage build: compile the release binary with the Rust toolchain, then ship only the root
# filesystem scripts/image-rootfs.sh makes of it (the binary, the libraries it links, CA roots,
# passwd/group for uid 65532) on an empty base: no shell, no package manager. `make image`
# builds the same files without a container engine (README "Image").
#   docker build -t ghcr.io/secprov/secprov-operator:0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) .
# The final stage is the image's one description: `make image` reads its ARG, LABEL, ENV, USER,
# EXPOSE, ENTRYPOINT and CMD (scripts/oci_image.py; tests/image.rs checks the archive against
# it), so change them here only.

# Latest stable Rust 1.x on Debian 12: the lock file may hold crates newer than the MSRV.
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole context (see .dockerignore): the manifest names every target and workspace member,
# and cargo refuses to parse it when one of their files is missing.
COPY . .
# Cache mounts keep the registry and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p secprov-operator --bin secprov-operator \
    && bash scripts/image-rootfs.sh target/release/secprov-operator /rootfs

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/secprov/secprov-operator
LABEL org.opencontainers.image.title="secprov-operator" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/secprov-operator"]
CMD ["run", "--leader-election", "--log-json"]
