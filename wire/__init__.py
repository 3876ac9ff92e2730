"""Our own wire-protocol engines, written where the libraries' were measured too slow on the
request path (README, "Performance"): an HTTP/1.1 server channel for daphne on httptools, a
pooled HTTP/1.1 upstream client, a pipelined RESP (Redis) client on hiredis, and a patch to
twisted's socket writes. They know nothing of Django or the rest of Clawdbot: the data plane
uses them, they import nothing from it. Each patches or parses beneath a library at a pinned
version (pyproject.toml says which and why)."""
