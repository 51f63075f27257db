# The liqmon monitor. Build context: the repository root.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY requirements/lock.txt ./requirements/lock.txt
COPY monitor ./monitor
COPY feeds ./feeds
COPY config ./config
RUN pip install --no-cache-dir --require-hashes -r requirements/lock.txt \
 && pip install --no-cache-dir --no-deps . \
 && useradd --system --uid 10001 liqmon
USER liqmon
ENV LIQMON_LOG_FORMAT=json
EXPOSE 8321
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8321/healthz', timeout=2)" || exit 1
ENTRYPOINT ["liqmon", "--config", "config/liqmon.toml"]
CMD ["run"]
