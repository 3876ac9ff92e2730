"""Load generation against an OpenAI-compatible /v1 API: the smoke load of the readiness
check, and ``clawdbot loadtest`` (or ``python -m loadgen``) on its own.

Modules: ``stats`` (pure: outcomes, the summary, percentiles, thresholds), ``runner`` (the
clients: ``run_load`` and ``run_load_sync``), ``report`` (the progress and the summary as
text), ``cli`` (flags and exit codes).

This package imports nothing from Django or the rest of the project, like ``simulator``: it
is a client, and runs from any machine that can reach the gateway.
"""
