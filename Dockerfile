# Tessera in a container: build with the pinned toolchain, run as a non-root user on a
# distroless base (no shell, no package manager). Docker cannot run on the project's own
# machines, so this file is kept minimal and conventional; see packaging/ for systemd.
#
#   docker build -t tessera .
#   docker run -p 7005:7005 -e TESSERA_MASTER_KEY=… -e TESSERA_ISSUER=https://id.example.com tessera
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tessera-cli \
    && install -D target/release/tessera /out/tessera \
    && mkdir -p /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tessera /usr/local/bin/tessera
COPY --from=build --chown=nonroot:nonroot /out/data /var/lib/tessera
ENV TESSERA_LISTEN=0.0.0.0:7005 \
    TESSERA_DATA_DIR=/var/lib/tessera \
    TESSERA_LOG_FORMAT=json
USER nonroot
EXPOSE 7005
VOLUME ["/var/lib/tessera"]
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["serve"]
