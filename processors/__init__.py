"""Stream processors: task state machine, workflow orchestrator, projector, stream tables, webhooks."""
