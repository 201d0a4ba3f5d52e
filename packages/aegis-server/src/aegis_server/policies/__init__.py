"""The policy set: loading policy files (`policies.files`) and managing the active, compiled set that
merges them with what the API stored (`policies.manager.PolicyManager`). Import from those modules."""

__all__: list[str] = []
