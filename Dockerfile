# One image for every taskmill service; the command picks the service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[postgres,redis,rabbitmq]"

COPY config ./config
COPY examples ./examples

RUN useradd --create-home taskmill && chown -R taskmill /app
USER taskmill

EXPOSE 8000
CMD ["taskmill", "--help"]
