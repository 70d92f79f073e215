# syntax=docker/dockerfile:1
# The worker image, in the style of LiveKit's agent starters: slim Python, a non-root user,
# model files fetched at build time, `start` as the command.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# gcc and the Python headers for wheels that compile on some platforms
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc python3-dev \
 && rm -rf /var/lib/apt/lists/*

ARG UID=10001
RUN adduser --disabled-password --gecos "" --home /home/appuser --shell /sbin/nologin \
    --uid "${UID}" appuser

WORKDIR /app
# The caller-memory package (installed from this checkout) and the worker's requirements
COPY pyproject.toml README.md requirements.txt ./
COPY src ./src
COPY supabase ./supabase
RUN python -m pip install -r requirements.txt

COPY . .
RUN mkdir -p /app/data && chown -R appuser:appuser /app
USER appuser

# Fetch the turn-detector and other model files now, not at the first call
RUN python agent.py download-files

CMD ["python", "agent.py", "start"]
