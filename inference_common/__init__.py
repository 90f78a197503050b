"""What the producer (the API, `apps.predictions`) and the consumers (`workers/`) both need.

The contract between the two sides of the broker, and nothing else: how tensors travel
(`wire`), where large tensors wait beside their task (`tensor_store`), the answer stored for each
request (`results`), the Celery task names and queues (`task_names`), the marks a worker child
leaves while it serves a version (`readiness`) and the channel a promotion is announced on
(`deployments`). Both sides import it; it imports neither (ruff's banned-api rule enforces that
`workers/` never imports `apps.predictions`, and this package imports no app). No TensorFlow.
"""
