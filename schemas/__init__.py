"""Avro contracts (`avro/*.avsc`, the source of truth) and their released snapshots."""
