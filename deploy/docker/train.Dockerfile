# The learning container: trains the model, evaluates it and, when it reaches the model's
# minimum metric, registers the new version through the registry's REST API.
#   docker run --rm -e REGISTRY_URL=https://api.example.com -e REGISTRY_TOKEN=... <image>
# With SIGN_KEY pointing at a mounted EC private key (PEM), the version is signed (OpenSSF
# model-signing) before the upload; environments that require signatures take only those:
#   docker run ... -v /secure/release.pem:/run/secrets/release.pem:ro -e SIGN_KEY=/run/secrets/release.pem <image>
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
COPY --chown=app:app inference_common ./inference_common
USER app
ENTRYPOINT ["sh", "-c", "exec python -m workers.training.release --api \"$REGISTRY_URL\" --token \"$REGISTRY_TOKEN\" \"$@\"", "--"]
