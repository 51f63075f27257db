# The liqmon image: `liqmon run` by default, `liqmon publish` with another
# command. Build context: the repository root, trimmed by .dockerignore.
# docker-compose.yml builds it once as liqmon:local for both services.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY requirements/lock.txt ./requirements/lock.txt
COPY monitor ./monitor
COPY feeds ./feeds
COPY config/liqmon.toml config/liqmon.docker.toml ./config/
# Exactly the locked packages, checked against their hashes; then liqmon alone.
RUN pip install --no-cache-dir --require-hashes -r requirements/lock.txt \
 && pip install --no-cache-dir --no-deps . \
 && useradd --system --uid 10001 liqmon
USER liqmon
# Inside a container the HTTP endpoint must listen on every interface for a
# port mapping (-p 8321:8321) to reach it; outside, the default stays 127.0.0.1.
ENV LIQMON_LOG_FORMAT=json \
    LIQMON_HTTP_HOST=0.0.0.0
EXPOSE 8321
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8321/healthz', timeout=2)" || exit 1
ENTRYPOINT ["liqmon", "--config", "config/liqmon.toml"]
CMD ["run"]
