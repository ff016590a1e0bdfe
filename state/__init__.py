"""Postgres: pools, transactions, forward-only migrations, consumed offsets, registry storage."""
