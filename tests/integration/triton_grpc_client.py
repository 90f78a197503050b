"""Triton's own gRPC client (`tritonclient.grpc`) against the platform, run by
tests/integration/test_grpc.py in a process of its own: its generated `inference.*` messages and
the platform's (apps/predictions/transports/oip) cannot share one protobuf descriptor pool.
Imports nothing of the project.

    python triton_grpc_client.py HOST:PORT TOKEN ROWS.json   prints a JSON summary
"""

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def main(target: str, token: str, rows: np.ndarray) -> dict[str, object]:
    headers = {"authorization": f"Bearer {token}"}
    client = triton.InferenceServerClient(target)
    summary: dict[str, object] = {
        "server_live": client.is_server_live(),
        "server_ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("digits", headers=headers),
        "model_ready_v1": client.is_model_ready("digits", model_version="1", headers=headers),
        "metadata": client.get_model_metadata("digits", headers=headers, as_json=True),
        "server_name": client.get_server_metadata(as_json=True)["name"],
    }
    top1, ids, versions = [], [], set()
    for start in range(0, len(rows), 40):
        batch = rows[start : start + 40]
        tensor = triton.InferInput("pixels", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        result = client.infer(
            "digits",
            [tensor],
            model_version="1",
            outputs=[triton.InferRequestedOutput("scores")],
            headers=headers,
            request_id=f"triton-grpc-{start}",
            priority=1 if start % 80 == 0 else 0,  # every other batch at the highest level
        )
        response = result.get_response(as_json=True)
        ids.append(response["id"])
        versions.add(response["model_version"])
        top1 += np.argmax(result.as_numpy("scores"), axis=1).tolist()
    summary.update(top1=top1, ids=ids, versions=sorted(versions))
    try:
        client.infer("digits", [tensor], headers={"authorization": "Bearer wrong"})
    except InferenceServerException as error:
        summary["wrong_key"] = error.status()
    try:
        client.infer("digits", [tensor], headers=headers, priority=9)
    except InferenceServerException as error:
        summary["bad_priority"] = [error.status(), error.message()]
    return summary


if __name__ == "__main__":
    held_out = np.array(json.loads(Path(sys.argv[3]).read_text()), dtype=np.float32)
    print(json.dumps(main(sys.argv[1], sys.argv[2], held_out)))
