# syntax=docker/dockerfile:1
# The palisade binary on a distroless base, running as a non-root user.
#   docker build -t palisade .
#   docker run --rm -p 8080:8080 -v $PWD/examples:/etc/palisade palisade gateway --config /etc/palisade/minimal.yaml
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p palisade-cli

# palisade:ignore DF010 distroless has no shell or curl; Kubernetes probes the pod instead (deploy/kubernetes)
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/palisade /usr/local/bin/palisade
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/palisade"]
CMD ["gateway", "--config", "/etc/palisade/gateway.yaml"]
