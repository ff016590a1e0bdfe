"""HTTP API (aiohttp): auth, validation, commands to Kafka, reads from Postgres, schema registry."""
