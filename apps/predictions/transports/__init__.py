"""Transport adapters, one module per protocol: parse a request into the data plane's types,
render its answer or its `ApiError` in the protocol's own form. No authentication, routing or
enqueueing here (apps/predictions/dataplane.py does those)."""
