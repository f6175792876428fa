# The example worker image (examples/kubernetes). Build from the repository root:
# docker build -f tests/kind/worker.Dockerfile -t mainstay-example-worker:dev .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mainstay-example-worker

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/mainstay-example-worker /usr/local/bin/mainstay-example-worker
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mainstay-example-worker"]
