"""KServe's own gRPC client (`kserve.InferenceGRPCClient`) against the platform, run by
tests/integration/test_grpc.py in a virtualenv of its own (kserve pins psutil<6, the platform
7.x). Imports nothing of the project.

    python kserve_grpc_client.py HOST:PORT TOKEN ROWS.json   prints a JSON summary
"""

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest


async def main(target: str, token: str, rows: np.ndarray) -> dict[str, object]:
    headers = [("authorization", f"Bearer {token}")]
    summary: dict[str, object] = {}
    async with InferenceGRPCClient(target, timeout=30, retries=0) as client:
        summary["server_ready"] = await client.is_server_ready()
        summary["model_ready"] = await client.is_model_ready("digits", headers=headers)
        for raw in (True, False):
            tensor = InferInput("pixels", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows, binary_data=raw)
            request = InferRequest(
                model_name="digits", infer_inputs=[tensor], request_id=f"kserve-{raw}", model_version="1"
            )
            response = await client.infer(request, headers=headers)
            (output,) = response.outputs
            summary["raw" if raw else "typed"] = {
                "id": response.id,
                "model_version": response.model_version,
                "name": output.name,
                "top1": np.argmax(output.as_numpy(), axis=1).tolist(),
            }
        try:
            await client.infer(request, headers=[("authorization", "Bearer wrong")])
        except Exception as error:  # grpc.aio.AioRpcError
            summary["wrong_key"] = str(error.code())  # type: ignore[attr-defined]
    return summary


if __name__ == "__main__":
    held_out = np.array(json.loads(Path(sys.argv[3]).read_text()), dtype=np.float32)
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], held_out))))
