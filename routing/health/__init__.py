"""Provider health: status derivation (status.py, pure), the traffic circuit breaker
(breaker.py), probes and their storage (probes.py), the worker loop (worker.py) and
the database thread they share (db_thread.py). docs/health.md explains the rules."""
