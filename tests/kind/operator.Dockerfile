# The operator image: a static-enough release build on a distroless, non-root base.
# Build from the repository root: docker build -f tests/kind/operator.Dockerfile -t mainstay-operator:dev .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mainstay-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/mainstay-operator /usr/local/bin/mainstay-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mainstay-operator"]
