"""The checklist as an operator reads it in a terminal."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence

from readiness.runner import Finding, RunReport

MARKS = {"pass": "PASS", "fail": "FAIL", "skip": "skip"}


def line(finding: Finding, width: int | None = None) -> str:
    """One check: its mark and title, then its reason wrapped beneath."""
    width = width or shutil.get_terminal_size((100, 20)).columns
    head = f"{MARKS.get(finding.status, finding.status):4}  {finding.title}"
    timing = f" ({finding.duration_ms / 1000:.1f} s)" if finding.duration_ms >= 1000 else ""
    reason = textwrap.fill(
        finding.reason + timing,
        width=max(40, width - 6),
        initial_indent="      ",
        subsequent_indent="      ",
    )
    return f"{head}\n{reason}"


def verdict(report: RunReport) -> str:
    findings: Sequence[Finding] = report.findings
    failed = [f for f in findings if f.status == "fail"]
    stored = f"run {report.run_id}" if report.run_id else "not stored: the database is unavailable"
    if failed:
        return f"NOT READY: {len(failed)} of {len(findings)} checks failed ({stored})"
    passed = sum(f.status == "pass" for f in findings)
    skipped = sum(f.status == "skip" for f in findings)
    return f"READY: {passed} passed, {skipped} skipped ({stored})"
