"""One module per system the benchmark measures, each starting it, measuring it and stopping it:
`ours` (our platform), `naive_celery`, `redis_loop`, `ray_serve` (the peers, whose own servers
are in bench/peers/) and `raw` (in-process predict, the limit). bench/run.py runs them in turn."""
