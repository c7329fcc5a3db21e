# Centralita's image: the server and its shipped prompts and IVR flows.
#   docker build -t centralita .
#   docker run --network host -v ./deploy/centralita/madrid.yaml:/etc/centralita/centralita.yaml:ro centralita
FROM python:3.11-slim-bookworm

WORKDIR /opt/centralita
COPY pyproject.toml README.md ./
COPY events ./events
COPY settings ./settings
COPY pbx ./pbx
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
