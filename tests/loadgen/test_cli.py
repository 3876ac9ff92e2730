"""The command line's parsing and its refusals of bad arguments (exit 2), before any
network; the runs themselves are in tests/nodes/test_loadtest_command.py."""

from __future__ import annotations

import argparse
import io

import pytest

from loadgen.cli import PLAIN_PROGRESS_EVERY_S, ProgressDisplay, main, parse_duration, parse_rate
from loadgen.report import progress_bar, progress_line
from loadgen.runner import Progress


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30),
        ("30s", 30),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("2m", 120),
        ("1m30s", 90),
        ("1h", 3600),
        (" 4.5 ", 4.5),
        (".5", 0.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "30x", "1m30", "-5s", "0", "0s", "5 s", "1e3"])
def test_not_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_rates() -> None:
    assert parse_rate("0.005") == 0.005
    assert parse_rate("0.5%") == pytest.approx(0.005)
    assert parse_rate("0") == 0.0
    for bad in ("1.5", "-0.1", "150%", "half"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_rate(bad)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--key", "k"], "the following arguments are required: --model"),
        (["--model", "m"], "no API key: give --key or set CLAWDBOT_API_KEY"),
        (["--model", "m", "--key", "k", "-n", "5", "--duration", "5s"], "not allowed with"),
        (["--model", "m", "--key", "k", "--concurrency", "0"], "must be at least 1"),
        (["--model", "m", "--key", "k", "--max-ttft-p95", "1"], "--max-ttft-p95 needs --stream"),
        (["--model", "m", "--key", "k", "--max-error-rate", "2"], "a rate is between 0 and 1"),
    ],
)
def test_bad_arguments_exit_2_and_say_why(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("CLAWDBOT_API_KEY", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


PROGRESS = Progress(done=5, errors=0, in_flight=2, elapsed_s=1.0, total=10, duration_s=None)


def test_a_terminal_gets_a_bar_redrawn_in_place() -> None:
    terminal = Terminal()
    display = ProgressDisplay(terminal)
    display.show(PROGRESS)
    display.show(PROGRESS)
    display.end()
    bar = "\r\x1b[K" + progress_bar(PROGRESS)
    assert terminal.getvalue() == bar + bar + "\n"


def test_a_pipe_gets_a_line_every_few_seconds() -> None:
    pipe = io.StringIO()
    display = ProgressDisplay(pipe)
    display.show(PROGRESS)
    assert pipe.getvalue() == ""
    display.last_line -= PLAIN_PROGRESS_EVERY_S
    display.show(PROGRESS)
    display.show(PROGRESS)
    display.end()
    assert pipe.getvalue() == progress_line(PROGRESS) + "\n"
