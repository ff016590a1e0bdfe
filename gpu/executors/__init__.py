"""Executors: one callable per provider type, `executor(job) -> result fields`.

An executor raises `ValueError` for bad input (the task fails at once, category VALIDATION)
and anything else for trouble worth retrying (category TRANSIENT).
"""
