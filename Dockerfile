# Image of the billing workers for compose.yaml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY projections projections
COPY consumers consumers
COPY infra infra
RUN pip install --no-cache-dir .
USER nobody
CMD ["billing", "run"]
