# syntax=docker/dockerfile:1
# Multi-stage build: compile with the Rust toolchain, ship only the static-glibc binary on a
# distroless base that has no shell and runs as an unprivileged user (uid 65532).
#   docker build -t ghcr.io/secprov/secprov-operator:0.1.0 .

# Latest stable Rust 1.x: the lock file may hold crates newer than the MSRV in Cargo.toml.
FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so editing src/ does not rebuild them.
# sim/ (the test simulators, a workspace member) is only stubbed: the operator does not use it.
COPY Cargo.toml Cargo.lock ./
COPY sim/Cargo.toml ./sim/
RUN mkdir -p src sim/src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > sim/src/main.rs && touch sim/src/lib.rs \
    && cargo build --release --locked --package secprov-operator \
    && rm -rf src
COPY src ./src
# Bump mtimes so cargo rebuilds the crate itself over the placeholder.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin secprov-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/secprov-operator /usr/local/bin/secprov-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/secprov-operator"]
CMD ["run", "--leader-election", "--log-json"]
