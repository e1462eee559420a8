# syntax=docker/dockerfile:1
# stsguard container image: build the release binary, ship it on a distroless base as non-root.
#
# Local build, then run it in a kind cluster (README, "Install from source"):
#
#   docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -t stsguard:dev .
#   kind load docker-image stsguard:dev
#   helm install stsguard charts/stsguard -n stsguard --create-namespace \
#        --set image.repository=stsguard --set image.tag=dev
#
# The release workflow (.github/workflows/release.yml) builds linux/amd64 and linux/arm64 from
# this file on native runners and passes VERSION, GIT_COMMIT and SOURCE.
#
# Both base images are pinned by the digest of their multi-platform index, so a rebuild starts
# from the same bytes. Dependabot (.github/dependabot.yml, docker ecosystem) proposes new
# digests; bump them deliberately. The builder's Rust is the crate's rust-version (Cargo.toml).

FROM rust:1.89-bookworm@sha256:948f9b08a66e7fe01b03a98ef1c7568292e07ec2e4fe90d88c07bb14563c84ff AS builder
# The commit `stsguard --version` reports; the build reads STSGUARD_GIT_COMMIT when it compiles.
ARG GIT_COMMIT=unknown
ENV STSGUARD_GIT_COMMIT=${GIT_COMMIT}
WORKDIR /build
# Only what `cargo build --release` reads: the manifest, the lock file, the sources, the
# built-in policy (src/policy.rs embeds policies/default.yaml) and benches/, which Cargo.toml
# names as targets (cargo refuses a manifest whose named targets are missing). README.md,
# examples/ and tests/ are read by test builds only.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY policies ./policies
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked --bin stsguard \
 && /build/target/release/stsguard --version

# The bare binary, for the release archives: `docker buildx build --target binary --output
# type=local,dest=out .` writes out/stsguard (linked against glibc 2.36, Debian 12).
FROM scratch AS binary
COPY --from=builder /build/target/release/stsguard /stsguard

# glibc and libgcc only, no shell, uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
# VERSION is Cargo.toml's version (tests/chart/test_release.py checks that they agree; the
# release workflow passes the tag's). KUBERNETES_API is the k8s-openapi feature the binary is
# built against (Cargo.toml: v1_36).
ARG VERSION=0.1.0
ARG GIT_COMMIT=unknown
ARG SOURCE=https://github.com/stsguard/stsguard
ARG KUBERNETES_API=1.36
LABEL org.opencontainers.image.title="stsguard" \
      org.opencontainers.image.description="Kubernetes admission webhook that enforces StatefulSet best practices" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.stsguard.kubernetes-api-version="${KUBERNETES_API}"
COPY --from=builder /build/target/release/stsguard /usr/local/bin/stsguard
USER 65532:65532
# 8443: the webhook over HTTPS; 8080: /healthz and /readyz over plain HTTP.
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/stsguard"]
CMD ["serve"]
