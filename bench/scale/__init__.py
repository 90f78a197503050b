"""The multi-host harness (`make scale`): hosts as network namespaces on one machine, the platform
started across them with deploy/'s start scripts, throughput across worker hosts and the faults
of issue #15 measured against it (docs/scaling.md)."""
