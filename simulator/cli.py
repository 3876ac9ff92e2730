"""The command line (``python -m simulator``, ``clawdbot simulate-node``): flags to a
``SimConfig``, the main-port and control-port applications, and serving them until a signal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from simulator import control, ollama_api, server_kinds
from simulator.engine import DEFAULT_PREFIX_CACHE_TOKENS, SimConfig, normalize_model_name
from simulator.state import STATE, Listener, SimState, bind_socket, host_for_url

BANNER = "Clawdbot simulated GPU node (not a real GPU)"
DEFAULT_PORTS = {"ollama": 11434, "openai": 8000}


def build_apps(state: SimState) -> tuple[web.Application, web.Application]:
    """The main application (API + /_sim) and the control-port application (/_sim only)."""
    main_app = web.Application(middlewares=[control.observe], client_max_size=256 * 1024 * 1024)
    main_app[STATE] = state
    if state.config.api == "ollama":
        ollama_api.add_routes(main_app)
    else:
        server_kinds.add_routes(main_app, state.config.server_kind)
    control.add_routes(main_app)
    control_app = web.Application()
    control_app[STATE] = state
    control.add_routes(control_app)
    for app in (main_app, control_app):
        app.on_response_prepare.append(control.mark_simulated)
    return main_app, control_app


def banner(config: SimConfig, port: int, control_url: str) -> str:
    host = host_for_url(config.host)
    return (
        f"{BANNER} listening on http://{host}:{port} api={config.api} gpu={config.gpu_type} "
        f"models={','.join(config.models)} control={control_url}"
    )


async def serve(config: SimConfig, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or forever); prints the banner once listening."""
    state = SimState(config)
    main_app, control_app = build_apps(state)
    # Cancelling the handler on disconnect is what frees a parallel slot at once.
    main_runner = web.AppRunner(
        main_app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
    )
    control_runner = web.AppRunner(control_app, access_log=None, shutdown_timeout=0.5)
    await main_runner.setup()
    await control_runner.setup()
    try:
        listener = Listener(main_runner, config.host, config.port)
        state.listener = listener
        if state.faults.refuse_connections:
            listener.reserve()
        else:
            await listener.open()
        control_sock = bind_socket(config.host, config.control_port)
        control_port = control_sock.getsockname()[1]
        control_site = web.SockSite(control_runner, control_sock, shutdown_timeout=0.5)
        await control_site.start()
        state.control_url = f"http://{host_for_url(config.host)}:{control_port}"
        print(banner(config, listener.port, state.control_url), flush=True)
        await (stop or asyncio.Event()).wait()
    finally:
        await main_runner.cleanup()
        await control_runner.cleanup()


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description=(
            "Run a SIMULATED GPU inference node (not a real GPU): Ollama's native API or "
            "vLLM's OpenAI-compatible API with a timing model and fault injection. "
            "Delays scale as: prefill = tokens * prefill-ms / f, decode per token = "
            "decode-ms / f * (1 + 0.15 * (running - 1)), f = gpu factor * speed; "
            "cold load = cold-load-ms / speed."
        ),
    )
    add = parser.add_argument
    add("--api", choices=("ollama", "openai"), default="ollama", help="API to speak")
    add(
        "--server-kind",
        choices=server_kinds.KINDS,
        default="vllm",
        help="with --api openai, the server imitated: its routes (/health, /props, /info, "
        "/get_model_info), where it says the context window, its /metrics gauges",
    )
    add(
        "--metrics-delay-ms",
        type=float,
        default=0.0,
        help="delay before /metrics answers (a server slow to report under load)",
    )
    add("--host", default="127.0.0.1")
    add(
        "--port",
        type=int,
        default=None,
        help="main port (default 11434 for ollama, 8000 for openai; 0 picks a free one)",
    )
    add(
        "--control-port",
        type=int,
        default=0,
        help="port that keeps serving /_sim/* while the main port refuses (0 = random)",
    )
    add(
        "--gpu-type",
        default="A100",
        help="A10, A100, H100, H200, L40S, RTX4090 (others count as A10)",
    )
    add(
        "--model",
        dest="model_list",
        action="append",
        default=None,
        metavar="NAME",
        help="model to serve (repeatable; default qwen3:32b)",
    )
    add("--models", default=None, metavar="A,B", help="comma-separated models to serve")
    add("--parallel", type=int, default=4, help="sequences decoded at once")
    add("--max-queue", type=int, default=16, help="requests waiting for a slot before 503")
    add("--decode-ms", type=float, default=30.0, help="ms per output token on an A10")
    add("--prefill-ms", type=float, default=0.5, help="ms per prompt token on an A10")
    add("--speed", type=float, default=1.0, help="multiplier: 2 makes every delay half as long")
    add(
        "--cold-load-ms",
        type=float,
        default=500.0,
        help="model load time (divided by --speed, not by the GPU factor)",
    )
    add("--preloaded", action="store_true", help="models start loaded (Ollama kind)")
    add(
        "--context-length",
        type=int,
        default=32768,
        help="trained context length (Ollama) / max_model_len (openai)",
    )
    add(
        "--default-num-ctx",
        type=int,
        default=4096,
        help="Ollama window when a request sends no options.num_ctx",
    )
    add("--keep-alive", default="5m", help="default Ollama keep_alive")
    add("--answer-tokens", type=int, default=20, help="natural answer length in tokens")
    add("--embedding-dim", type=int, default=384)
    add(
        "--zero-latency",
        action="store_true",
        help="no delays at all (no sleeps, no cold load), for benchmarks",
    )
    add(
        "--error-rate",
        type=float,
        default=0.0,
        help="fraction of inference requests answered with --error-status",
    )
    add("--error-status", type=int, default=500)
    add("--hang", action="store_true", help="accept requests but never answer")
    add(
        "--drop-mid-stream-after",
        type=int,
        default=None,
        metavar="N",
        help="cut streams after N tokens",
    )
    add(
        "--drop-mode",
        choices=("error", "abrupt"),
        default="error",
        help="error: an error line/event then end; abrupt: close the connection",
    )
    add(
        "--refuse-connections",
        action="store_true",
        help="start with the main port closed (ECONNREFUSED)",
    )
    add(
        "--engine-dead",
        action="store_true",
        help="/health answers 503 and inference 500 (vLLM EngineDeadError)",
    )
    add(
        "--ignore-truncate",
        action="store_true",
        help="behave like Ollama before v0.30.9: truncate oversized prompts silently even when "
        "the request sends truncate/shift false",
    )
    add("--fault-seed", type=int, default=None, help="seed for --error-rate draws")
    add(
        "--prefix-cache-tokens",
        type=int,
        default=DEFAULT_PREFIX_CACHE_TOKENS,
        metavar="N",
        help="prompt tokens the node's prefix (KV) cache keeps, least recently used out first;"
        " cached tokens skip prefill (0 turns the cache off, as --zero-latency does)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    models: list[str] = list(args.model_list or [])
    if args.models:
        models.extend(m.strip() for m in args.models.split(",") if m.strip())
    if not models:
        models = ["qwen3:32b"]
    if args.api == "ollama":
        # Ollama lists every model with its tag; "llama3" is "llama3:latest".
        models = [normalize_model_name(m) for m in models]
    port = DEFAULT_PORTS[args.api] if args.port is None else args.port
    return SimConfig(
        api=args.api,
        server_kind=args.server_kind,
        metrics_delay_ms=args.metrics_delay_ms,
        host=args.host,
        port=port,
        control_port=args.control_port,
        gpu_type=args.gpu_type,
        models=tuple(dict.fromkeys(models)),
        parallel=args.parallel,
        max_queue=args.max_queue,
        decode_ms=args.decode_ms,
        prefill_ms=args.prefill_ms,
        speed=args.speed,
        cold_load_ms=args.cold_load_ms,
        preloaded=args.preloaded,
        context_length=args.context_length,
        default_num_ctx=args.default_num_ctx,
        keep_alive=args.keep_alive,
        answer_tokens=args.answer_tokens,
        embedding_dim=args.embedding_dim,
        zero_latency=args.zero_latency,
        ignore_truncate=args.ignore_truncate,
        fault_seed=args.fault_seed,
        error_rate=args.error_rate,
        error_status=args.error_status,
        hang=args.hang,
        drop_mid_stream_after=args.drop_mid_stream_after,
        drop_mode=args.drop_mode,
        refuse_connections=args.refuse_connections,
        engine_dead=args.engine_dead,
        prefix_cache_tokens=args.prefix_cache_tokens,
    )


async def _serve_until_signalled(config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Only the main thread may install handlers; elsewhere Ctrl-C still raises.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    await serve(config, stop)


def main(
    argv: Sequence[str] | None = None, *, parser: argparse.ArgumentParser | None = None
) -> int:
    parser = parser or build_arg_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    config = config_from_args(args)
    try:
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))
    if config.port != 0 and config.port == config.control_port:
        parser.error("--control-port must differ from --port")
    try:
        asyncio.run(_serve_until_signalled(config))
    except OSError as exc:
        print(f"simulate-node: cannot listen: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
