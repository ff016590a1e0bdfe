"""Kafka plumbing: topics, Avro contracts and serde, schema registry clients, consumer loops."""
