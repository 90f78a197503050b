# Flower for the Celery workers, always behind basic auth (FLOWER_BASIC_AUTH=user:password).
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY requirements-api.txt ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --quiet --upgrade pip \
 && /opt/venv/bin/python -m pip install --quiet -r requirements-api.txt

FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=inference_project.settings.production \
    FLOWER_ADDRESS=0.0.0.0 FLOWER_PORT=5555 INFERENCE_SERVICE=flower
RUN useradd --uid 10001 --create-home app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=app:app manage.py ./
COPY --chown=app:app inference_project ./inference_project
COPY --chown=app:app inference_common ./inference_common
COPY --chown=app:app apps ./apps
COPY --chown=app:app deploy/bin ./deploy/bin
USER app
EXPOSE 5555
# The start script `make run` runs too (deploy/circus.ini); it refuses to start without FLOWER_BASIC_AUTH.
CMD ["/app/deploy/bin/flower"]
