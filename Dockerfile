# syntax=docker/dockerfile:1
# stsguard container image: build the release binary, ship it on a distroless base as non-root.
#
#   docker build -t ghcr.io/stsguard/stsguard:0.1.0 .
#
# The chart (charts/stsguard) runs it as `stsguard serve --tls-cert ... --policy ...`.

FROM rust:1-bookworm AS builder
WORKDIR /build
# Only what `cargo build --release` reads: the manifest, the lock file, the sources and the
# built-in policy (src/policy.rs embeds policies/default.yaml). README.md, examples/ and
# tests/ are read by test builds only.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY policies ./policies
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked --bin stsguard \
 && /build/target/release/stsguard --version

# glibc and libgcc only, no shell, uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="stsguard" \
      org.opencontainers.image.description="Kubernetes admission webhook that enforces StatefulSet best practices" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /build/target/release/stsguard /usr/local/bin/stsguard
USER 65532:65532
# 8443: the webhook over HTTPS; 8080: /healthz and /readyz over plain HTTP.
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/stsguard"]
CMD ["serve"]
