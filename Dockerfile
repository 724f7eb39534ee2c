# The anomrec processor image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY anomrec ./anomrec
COPY streaming ./streaming
COPY batch ./batch
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["anomrec"]
CMD ["run"]
