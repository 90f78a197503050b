"""Peer (c): Ray Serve with @serve.batch, one replica, same model and batch limits.

python -m bench.peers.ray_serve_app <model.keras> <port>
"""

import logging
import sys
import time

import numpy as np
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1}, max_ongoing_requests=512)
class KerasModel:
    def __init__(self, model_path: str) -> None:
        import keras

        self.model = keras.saving.load_model(model_path, compile=False)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def predict(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        scores = np.asarray(self.model.predict_on_batch(np.concatenate(batches)))
        out, start = [], 0
        for rows in batches:
            out.append(scores[start : start + len(rows)])
            start += len(rows)
        return out

    async def __call__(self, request: Request) -> JSONResponse:
        rows = np.asarray((await request.json())["inputs"], dtype=np.float32)
        return JSONResponse({"predictions": (await self.predict(rows)).tolist()})


def main() -> None:
    model_path, port = sys.argv[1], int(sys.argv[2])
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # @serve.deployment makes the class a Deployment, which has .bind; mypy keeps a decorated class's type.
    serve.run(KerasModel.bind(model_path), route_prefix="/predict")  # type: ignore[attr-defined]
    print("ray serve ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
