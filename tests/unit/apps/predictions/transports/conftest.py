import numpy as np

from apps.predictions.selectors import ServedModel
from apps.predictions.types import InferenceResponse

SIGNATURE = {
    "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
    "class_names": ["a", "b", "c"],
}
SERVED = ServedModel(name="toy", version=2, signature=SIGNATURE)
ROWS = [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
SCORES = np.array([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1]], dtype=np.float32)
RESPONSE = InferenceResponse(id="abc", served=SERVED, outputs={"scores": SCORES})

BYTES_SERVED = ServedModel(
    name="words",
    version=1,
    signature={
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
    },
)
PNG = b"\x89PNG\r\n\x1a\n\x00\xff"
