"""The governance use cases, one module each: proposals (propose and confirm), reviews, executions,
decision and audit reads, the domain errors they raise, and `service.GovernanceService`, the façade the
routers, the CLI and the in-process server call. Import from those modules."""

__all__: list[str] = []
