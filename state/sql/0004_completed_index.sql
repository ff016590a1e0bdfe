-- Tasks completed in the last hour, by queue (GET /api/v1/monitoring/queues, ADR 11): a
-- partial index, so that the query reads the last hour's completions, not every task.
CREATE INDEX tasks_completed_idx ON tasks (completed_at) WHERE status = 'COMPLETED';
