# The learning container: trains the model, evaluates it and, when it reaches the model's
# minimum metric, registers the new version through the registry's REST API.
#   docker run --rm -e REGISTRY_URL=https://api.example.com -e REGISTRY_TOKEN=... <image>
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY requirements.txt ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --quiet --upgrade pip \
 && /opt/venv/bin/python -m pip install --quiet -r requirements.txt

FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
RUN useradd --uid 10001 --create-home app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=app:app workers ./workers
USER app
ENTRYPOINT ["sh", "-c", "exec python -m workers.training.release --api \"$REGISTRY_URL\" --token \"$REGISTRY_TOKEN\" \"$@\"", "--"]
