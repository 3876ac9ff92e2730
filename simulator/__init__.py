"""A SIMULATED GPU inference node: a real HTTP server that speaks Ollama's native API or
vLLM's OpenAI-compatible API, with a timing model and fault injection.

Run it with ``python -m simulator --help`` (or ``clawdbot simulate-node``). The first
stdout line says it is simulated and gives the URLs::

    Clawdbot simulated GPU node (not a real GPU) listening on http://127.0.0.1:PORT api=ollama \
gpu=A100 models=qwen3:32b control=http://127.0.0.1:CPORT

Test and benchmark hooks, on the main port and on the control port (the control port stays
up while ``refuse_connections`` has closed the main one):

* ``GET/POST /_sim/control``  faults and config (see ``engine.apply_control``)
* ``GET /_sim/stats``         counters, slots, loaded models
* ``GET /_sim/requests?limit=N`` and ``POST /_sim/requests/clear``  recorded requests

Modules: ``engine`` (the pure timing model and answer planning), ``state`` (slots, loaded
models, counters), ``replies`` (what both APIs send alike), ``control`` (the hooks above),
``ollama_api`` and ``openai_api`` (the two APIs), ``cli`` (flags, applications, serving).

This package imports nothing from Django or the rest of the project: benchmarks run it
standalone.
"""
