# Flower for the Celery workers, always behind basic auth (FLOWER_BASIC_AUTH=user:password).
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY requirements-api.txt ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --quiet --upgrade pip \
 && /opt/venv/bin/python -m pip install --quiet -r requirements-api.txt

FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=inference_project.settings.production
RUN useradd --uid 10001 --create-home app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=app:app manage.py ./
COPY --chown=app:app inference_project ./inference_project
COPY --chown=app:app apps ./apps
USER app
EXPOSE 5555
CMD ["sh", "-c", "test -n \"$FLOWER_BASIC_AUTH\" && exec celery -A inference_project flower --port=5555 --address=0.0.0.0 --basic-auth=\"$FLOWER_BASIC_AUTH\""]
