# A GPU worker for one model queue: TensorFlow's GPU image, one child per GPU (each pinned to its
# GPU by workers/placement.py before TensorFlow loads), memory growth on.
FROM tensorflow/tensorflow:2.21.0-gpu AS build
WORKDIR /src
COPY requirements.txt ./
# TensorFlow (with CUDA) comes from the base image; everything else from requirements.txt.
RUN python3 -m venv --system-site-packages /opt/venv \
 && grep -v '^tensorflow-cpu' requirements.txt > requirements-gpu.txt \
 && /opt/venv/bin/python -m pip install --quiet --upgrade pip \
 && /opt/venv/bin/python -m pip install --quiet -r requirements-gpu.txt

FROM tensorflow/tensorflow:2.21.0-gpu
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=inference_project.settings.production \
    MODEL=digits INFERENCE_GPU_PER_CHILD=true TF_FORCE_GPU_ALLOW_GROWTH=true \
    WORKER_CONCURRENCY=gpus WORKER_NAME_SUFFIX=-gpu \
    INFERENCE_SERVICE=worker-gpu PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-multiproc
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
EXPOSE 9464
# The CPU worker's start script (deploy/bin/worker): WORKER_CONCURRENCY=gpus, one child per visible GPU.
CMD ["/app/deploy/bin/worker"]
