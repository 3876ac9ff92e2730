"""The command line (``python -m loadgen``, ``clawdbot loadtest``): flags to a run, the live
progress on stderr, the summary on stdout, and the exit code: 0 when every threshold held,
1 when one did not, 2 for bad arguments or a run that could not start (the server
unreachable, the key refused, the model not offered)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import TextIO

import orjson

from loadgen import report
from loadgen.runner import (
    DEFAULT_PROMPT,
    KeyRefused,
    LoadError,
    ModelNotOffered,
    Progress,
    Unreachable,
    run_load_sync,
    v1_url,
)
from loadgen.stats import Thresholds, evaluate

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_REQUESTS = 100
KEY_VARIABLE = "CLAWDBOT_API_KEY"
PLAIN_PROGRESS_EVERY_S = 5.0

EXIT_OK = 0
EXIT_THRESHOLD = 1
EXIT_USAGE = 2

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds from "30", "30s", "1.5s", "500ms", "2m", "1m30s" or "1h"."""
    value = text.strip().lower()
    parts = list(_DURATION_PART.finditer(value))
    if not parts or "".join(p.group(0) for p in parts) != value:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 500ms, 2m)")
    if len(parts) > 1 and any(p.group(2) is None for p in parts):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (every part needs a unit)")
    seconds = sum(float(p.group(1)) * _UNIT_S[p.group(2)] for p in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"a duration must be positive: {text!r}")
    return seconds


def parse_rate(text: str) -> float:
    """A fraction from "0.005" or "0.5%"."""
    value = text.strip()
    try:
        rate = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 0.005 or 0.5%)") from None
    if not 0 <= rate <= 1:
        raise argparse.ArgumentTypeError(f"a rate is between 0 and 1 (0% and 100%): {text!r}")
    return rate


def positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return number


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadgen",
        description=(
            "Load a Clawdbot (or any OpenAI-compatible) server through its /v1 chat "
            "completions with concurrent clients, show progress, summarize throughput, error "
            "rate by status and latency percentiles, and exit 1 if a threshold is broken "
            "(2 for bad arguments, an unreachable server or a refused key)."
        ),
    )
    add = parser.add_argument
    add("--url", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    add("--key", default=None, help=f"the API key (default: ${KEY_VARIABLE})")
    add("--model", required=True, help="the model to ask for")
    add("--concurrency", "-c", type=positive_int, default=10, help="clients at once (10)")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "--requests",
        "-n",
        type=positive_int,
        default=None,
        help=f"requests in all (default {DEFAULT_REQUESTS})",
    )
    amount.add_argument(
        "--duration", "-d", type=parse_duration, default=None, help="run this long, e.g. 30s, 2m"
    )
    add("--stream", action="store_true", help="stream the answers and measure time to first token")
    add("--max-tokens", type=positive_int, default=32, help="max_tokens of each request (32)")
    add("--prompt", default=DEFAULT_PROMPT, help="the user message")
    add(
        "--timeout",
        type=parse_duration,
        default=60.0,
        help="one request's limit, in seconds or e.g. 90s (60)",
    )
    limits = parser.add_argument_group("thresholds (exit 1 when one is broken)")
    limits.add_argument(
        "--max-error-rate", type=parse_rate, default=None, help="e.g. 0.005 or 0.5%%"
    )
    limits.add_argument(
        "--max-p95", type=parse_duration, default=None, help="latency p95 in seconds, e.g. 4.5"
    )
    limits.add_argument("--max-p99", type=parse_duration, default=None, help="latency p99")
    limits.add_argument(
        "--max-ttft-p95",
        type=parse_duration,
        default=None,
        help="time to first token p95 (needs --stream)",
    )
    add("--json", action="store_true", help="the summary as JSON on stdout")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    parser: argparse.ArgumentParser | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    parser = parser or build_arg_parser()
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    key = args.key or os.environ.get(KEY_VARIABLE, "")
    if not key:
        parser.error(f"no API key: give --key or set {KEY_VARIABLE}")
    if args.max_ttft_p95 is not None and not args.stream:
        parser.error("--max-ttft-p95 needs --stream: time to first token is measured on streams")
    thresholds = Thresholds(
        max_error_rate=args.max_error_rate,
        max_p95_s=args.max_p95,
        max_p99_s=args.max_p99,
        max_ttft_p95_s=args.max_ttft_p95,
    )
    url = v1_url(args.url)
    display = ProgressDisplay(err)
    try:
        summary = run_load_sync(
            args.url,
            key,
            args.model,
            concurrency=args.concurrency,
            requests=(args.requests or DEFAULT_REQUESTS) if args.duration is None else None,
            duration_s=args.duration,
            stream=args.stream,
            prompt=args.prompt,
            max_tokens=args.max_tokens,
            timeout_s=args.timeout,
            on_progress=display.show,
        )
    except Unreachable as exc:
        err.write(f"{parser.prog}: cannot connect to {exc.url} ({exc.cause}): ")
        err.write("is `clawdbot serve` running?\n")
        return EXIT_USAGE
    except KeyRefused as exc:
        err.write(f"{parser.prog}: the server refused the key (401: {exc.message}); ")
        err.write(f"check --key or ${KEY_VARIABLE}\n")
        return EXIT_USAGE
    except ModelNotOffered as exc:
        err.write(f"{parser.prog}: {exc}\n")
        return EXIT_USAGE
    except LoadError as exc:
        err.write(f"{parser.prog}: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        display.end()
        err.write(f"{parser.prog}: interrupted, no summary\n")
        return 130
    display.end()
    checks = evaluate(summary, thresholds)
    failed = [c for c in checks if not c.passed]
    if args.json:
        document = {
            **summary.to_dict(),
            "url": url,
            "thresholds": [asdict(c) for c in checks],
            "passed": not failed,
        }
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        for check in failed:
            err.write(f"{parser.prog}: threshold broken: {check.reason}\n")
    else:
        out.write(report.summary_table(summary, checks, url=url))
    out.flush()
    return EXIT_THRESHOLD if failed else EXIT_OK


class ProgressDisplay:
    """Progress on stderr: a bar redrawn in place on a terminal, else a line now and then."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = False
        self.last_line = time.monotonic()

    def show(self, progress: Progress) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + report.progress_bar(progress))
            self.stream.flush()
            self.drawn = True
        elif time.monotonic() - self.last_line >= PLAIN_PROGRESS_EVERY_S:
            self.last_line = time.monotonic()
            self.stream.write(report.progress_line(progress) + "\n")
            self.stream.flush()

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
