# Image of the billing workers for compose.yaml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY projections projections
COPY consumers consumers
COPY infra infra
RUN pip install --no-cache-dir .
# What the workers write beside the databases (the audit anchors' append-only copy): a folder
# the unprivileged user owns, kept in a volume by compose.yaml.
ENV BILLING_DATA_DIR=/var/lib/billing
RUN mkdir -p /var/lib/billing && chown nobody /var/lib/billing
USER nobody
CMD ["billing", "run"]
