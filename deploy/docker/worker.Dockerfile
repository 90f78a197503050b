# A CPU worker (consumer) for one model queue: MODEL=<name>. TensorFlow loads in each child
# after the fork. Also the platform worker (INFERENCE_WORKER_ROLE=platform, queue "platform").
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY requirements.txt ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --quiet --upgrade pip \
 && /opt/venv/bin/python -m pip install --quiet -r requirements.txt

FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=inference_project.settings.production \
    MODEL=digits WORKER_CONCURRENCY=1 PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-multiproc
RUN useradd --uid 10001 --create-home app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=app:app manage.py ./
COPY --chown=app:app inference_project ./inference_project
COPY --chown=app:app inference_common ./inference_common
COPY --chown=app:app apps ./apps
COPY --chown=app:app workers ./workers
COPY --chown=app:app deploy/bin ./deploy/bin
USER app
# /metrics of the worker (its children's samples, added up): workers/metrics.py
EXPOSE 9464
# The start scripts `make run` runs too (deploy/circus.ini): deploy/bin/worker for MODEL's queue,
# deploy/bin/worker-platform for the platform worker (the `command` of compose and Kubernetes).
CMD ["/app/deploy/bin/worker"]
