# The API (producer): Django under uvicorn. No TensorFlow in this image (requirements-api.txt).
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY requirements-api.txt ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --quiet --upgrade pip \
 && /opt/venv/bin/python -m pip install --quiet -r requirements-api.txt

FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=inference_project.settings.production \
    PROMOTION_GATE_RUNNER=worker API_HOST=0.0.0.0 API_PORT=8000 API_WORKERS=2 API_LOOP=asyncio GRPC_PORT=8081 \
    INFERENCE_SERVICE=api PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-multiproc
RUN useradd --uid 10001 --create-home app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=app:app manage.py ./
COPY --chown=app:app inference_project ./inference_project
COPY --chown=app:app inference_common ./inference_common
COPY --chown=app:app apps ./apps
COPY --chown=app:app deploy/bin ./deploy/bin
RUN DJANGO_SECRET_KEY=collectstatic-only DJANGO_ALLOWED_HOSTS=localhost \
    python manage.py collectstatic --noinput --verbosity 0
USER app
EXPOSE 8000 8081
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
# The start script `make run` runs too (deploy/circus.ini); the image also runs deploy/bin/migrate.
CMD ["/app/deploy/bin/api"]
