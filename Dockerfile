# The photon binary in a small runtime image: build with the Rust toolchain, run on distroless.
#   docker build -t photon:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin photon \
 && cp target/release/photon /photon

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /photon /usr/local/bin/photon
USER nonroot
EXPOSE 8000 8265 6379 9000
ENTRYPOINT ["photon"]
CMD ["--help"]
