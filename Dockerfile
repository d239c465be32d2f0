# smartybridge as a container, for Home Assistant Container, Docker and
# compose users (the Home Assistant add-on has its own, addon/Dockerfile).
# Build context: the repository root.
#   docker build -t smartybridge .
#   docker compose up -d        (compose.yaml)
# Published by .github/workflows/addon-image.yaml as
# ghcr.io/smartybridge/smartybridge:<version>.

FROM docker.io/library/golang:1.26.8-alpine3.23 AS build
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags="-s -w -buildid=" -o /out/smartybridge . \
 && mkdir -p /out/state

# Nothing but the static binary, the CA certificates (for mqtts://) and an
# empty state directory owned by the unprivileged user it runs as.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/smartybridge /smartybridge
COPY --from=build --chown=65532:65532 /out/state /var/lib/smartybridge
ENV SMARTY_STATE_DIR=/var/lib/smartybridge \
    SMARTY_HEALTH_FILE=/var/lib/smartybridge/health
VOLUME /var/lib/smartybridge
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD ["/smartybridge", "health"]
ENTRYPOINT ["/smartybridge"]
LABEL org.opencontainers.image.title="smartybridge" \
      org.opencontainers.image.description="Luxembourg Smarty P1 meter to Home Assistant over MQTT" \
      org.opencontainers.image.source="https://github.com/smartybridge/smartybridge" \
      org.opencontainers.image.licenses="MIT"
