"""The registry's services (writes), one module per concern; import from the module:

- `registration`: artifact kinds, signatures, the model card, `model_version_register`;
- `gates`: checksums, the gate process, `gates_run`;
- `profiling`: a version's reference statistics for drift;
- `deployments`: promotion, rollback, the bootstrap deployment, rollout reports;
- `retention`: pruning the bytes of versions deployed nowhere;
- `events`: the registry's event log and the release outbox;
- `actors`: who acts (the user a service is given), as recorded and as checked.

Reads are `apps.models_registry.selectors`; publishing the outbox to SNS is
`apps.models_registry.release`.
"""
