# The photon binary in a small runtime image: build with the Rust toolchain, run on distroless.
#   docker build -t photon:0.1.0 .
# With Python for Python deployments (the base for an application's image, see the README):
#   docker build --target python -t photon-python:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin photon \
 && cp target/release/photon /photon

# Python deployments: Debian's python3 and a virtual environment on PATH where an application's
# image installs what its code imports (FROM photon-python, then pip install, then COPY the code).
FROM python:3.12-slim-bookworm AS python
RUN useradd --uid 65532 --create-home nonroot \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir starlette \
 && chown -R nonroot /opt/venv
ENV PATH=/opt/venv/bin:$PATH PHOTON_PYTHON=/opt/venv/bin/python PHOTON_CACHE_DIR=/tmp/photon-cache
COPY --from=build /photon /usr/local/bin/photon
USER nonroot
WORKDIR /home/nonroot
EXPOSE 8000 8265 6379 9000
ENTRYPOINT ["photon"]
CMD ["--help"]

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /photon /usr/local/bin/photon
USER nonroot
EXPOSE 8000 8265 6379 9000
ENTRYPOINT ["photon"]
CMD ["--help"]
