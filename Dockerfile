# The server as a small, non-root container image:
#   docker build -t mixer:latest .
# Stage 1 builds the release binary from the locked dependency graph (no system protoc:
# the protos are compiled by protox in build.rs). Stage 2 is a distroless base with only
# glibc and libgcc, which is all the binary links against.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mixer --bin mixer \
 && strip target/release/mixer

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/mixer /usr/local/bin/mixer
# The embedded default configuration, for running without a cluster:
#   docker run mixer:latest server --config-dir /etc/mixer/default
COPY --from=build /src/samples/default /etc/mixer/default
# distroless's nonroot user (65532), as the Deployment's securityContext expects.
USER 65532:65532
EXPOSE 9091 15014 42422
ENTRYPOINT ["/usr/local/bin/mixer"]
CMD ["server", "--config-store-url=k8s://"]
