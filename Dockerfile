# Centralita's image: the server and its shipped prompts and IVR flows.
#   docker build -t centralita .
#   docker run --network host -v ./deploy/centralita/madrid.yaml:/etc/centralita/centralita.yaml:ro centralita
# The agent page's SIP phone (JsSIP, bundled from package-lock.json's pins); the server needs
# only the bundle, not Node.
FROM debian:bookworm-slim AS agent-page
RUN apt-get update && apt-get install -y --no-install-recommends npm ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY package.json package-lock.json ./
COPY scripts/build-agent-page ./scripts/
RUN mkdir -p pbx/agent_desk/static/vendor && scripts/build-agent-page

FROM python:3.11-slim-bookworm

WORKDIR /opt/centralita
COPY pyproject.toml README.md ./
COPY events ./events
COPY settings ./settings
COPY pbx ./pbx
COPY --from=agent-page /build/pbx/agent_desk/static/vendor/jssip.min.js ./pbx/agent_desk/static/vendor/
COPY ivr ./ivr
COPY router ./router
COPY callbacks ./callbacks
COPY monitoring ./monitoring
COPY simulation ./simulation
RUN pip install --no-cache-dir . \
    && useradd --system --home-dir /var/lib/centralita --create-home centralita

USER centralita
VOLUME /var/lib/centralita
# SIP (UDP and TCP), HTTP (/metrics, /healthz, the API); RTP ports come from media.port_min/max.
EXPOSE 5060/udp 5060/tcp 8080/tcp
ENTRYPOINT ["pbx"]
CMD ["serve", "--config", "/etc/centralita/centralita.yaml", "--var-dir", "/var/lib/centralita"]
