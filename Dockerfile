# pgconnector daemon image: `docker run -v ./config.yaml:/etc/pgconnector/config.yaml pgconnector`
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY connector ./connector
COPY sql ./sql
COPY config ./config
RUN pip install --no-cache-dir build && python -m build --wheel --outdir /dist

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin pgconnector
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl
USER pgconnector
ENV PYTHONUNBUFFERED=1
# JSON logs on stdout/stderr are what log collectors expect from a container.
ENTRYPOINT ["pgconnector", "--log-format", "json"]
CMD ["start", "-c", "/etc/pgconnector/config.yaml"]
