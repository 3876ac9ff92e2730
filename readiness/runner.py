"""One run of the checklist: every enabled check in order, each finding kept with its reason
(never a traceback), the run stored, an alert sent when it fails.

The checks run even when the database or Redis is down (that is when an operator most needs
the answer): findings are gathered in memory and stored at the end if the database allows."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError
from django.utils import timezone

from alerts.events import AlertEvent
from gateway.services import CreatedKey, apikey_create, apikey_revoke
from readiness import catalog
from readiness.checks import CHECKS, Context, NoGateway, describe_failure
from readiness.models import ReadinessCheck, ReadinessResult, ReadinessRun
from readiness.private_gateway import private_gateway
from readiness.verdicts import FAIL, Verdict, skipped

log = logging.getLogger(__name__)

SMOKE_KEY_LIFETIME = timedelta(minutes=30)


@dataclass(frozen=True)
class Finding:
    key: str
    title: str
    status: str
    reason: str
    details: dict[str, Any]
    duration_ms: int


@dataclass
class RunReport:
    trigger: str
    started_at: datetime
    findings: list[Finding] = field(default_factory=list)
    run_id: int | None = None  # None when the database could not store it
    gateway_url: str = ""
    finished_at: datetime | None = None

    @property
    def passed(self) -> bool:
        return not any(f.status == FAIL for f in self.findings)

    @property
    def state(self) -> str:
        return ReadinessRun.State.PASSED if self.passed else ReadinessRun.State.FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "state": self.state,
            "trigger": self.trigger,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "gateway_url": self.gateway_url,
            "results": [
                {
                    "check_key": f.key,
                    "title": f.title,
                    "status": f.status,
                    "reason": f.reason,
                    "details": f.details,
                    "duration_ms": f.duration_ms,
                }
                for f in self.findings
            ],
        }


def sync_catalog() -> None:
    """A row per check in the code: new checks appear enabled, titles follow the code, an
    operator's `enabled` choice is kept."""
    for position, spec in enumerate(catalog.CHECKS):
        ReadinessCheck.objects.update_or_create(
            key=spec.key,
            defaults={"title": spec.title, "description": spec.description, "position": position},
        )
    ReadinessCheck.objects.exclude(key__in=catalog.KEYS).delete()


def start_run(trigger: str) -> ReadinessRun:
    """The row of a run started from the admin or the API, before a worker runs it."""
    return ReadinessRun.objects.create(started_at=timezone.now(), trigger=trigger[:40])


def run_checklist(
    *,
    trigger: str,
    gateway_url: str = "",
    run_id: int | None = None,
    progress: Callable[[Finding], None] | None = None,
) -> RunReport:
    """Run every enabled check; without `gateway_url`, the request-path checks go to a
    private gateway started for the run. `run_id`: a run row made beforehand (the admin's
    and the API's), finished here."""
    report = RunReport(trigger=trigger, started_at=timezone.now(), gateway_url=gateway_url)
    enabled = _enabled_checks()
    smoke = _smoke_key()
    try:
        with _gateway(gateway_url) as start_gateway:
            ctx = Context(
                start_gateway=start_gateway,
                smoke_key=smoke.secret if smoke else "",
                smoke_prefix=smoke.key.prefix if smoke else "",
            )
            for spec in catalog.CHECKS:
                finding = _run_one(spec, enabled.get(spec.key, True), ctx, smoke is not None)
                report.findings.append(finding)
                if progress is not None:
                    progress(finding)
            report.gateway_url = gateway_url or ("(private)" if ctx.gateway_started else "")
    finally:
        if smoke is not None:
            with contextlib.suppress(DatabaseError):
                apikey_revoke(key=smoke.key)
    report.finished_at = timezone.now()
    report.run_id = _store(report, run_id)
    log.log(
        logging.INFO if report.passed else logging.WARNING,
        "readiness run %s (%s): %s",
        report.run_id,
        trigger,
        report.state,
    )
    if not report.passed:
        _alert(report)
    return report


def _enabled_checks() -> dict[str, bool]:
    try:
        sync_catalog()
        return dict(ReadinessCheck.objects.values_list("key", "enabled"))
    except DatabaseError as exc:
        log.warning("readiness: the database is unavailable (%s); running every check", exc)
        return {}


def _smoke_key() -> CreatedKey | None:
    """A short-lived key for the smoke load, revoked when the run ends."""
    try:
        return apikey_create(name="readiness-smoke", expires_at=timezone.now() + SMOKE_KEY_LIFETIME)
    except DatabaseError as exc:
        log.warning("readiness: no smoke key (%s)", exc)
        return None


@contextlib.contextmanager
def _gateway(url: str) -> Iterator[Callable[[], str]]:
    if url:
        yield lambda: url.rstrip("/")
        return
    with private_gateway() as start:
        yield start


def _run_one(spec: catalog.CheckSpec, enabled: bool, ctx: Context, have_key: bool) -> Finding:
    started = time.perf_counter()
    if not enabled:
        verdict: Verdict = skipped("disabled by an operator (admin: Readiness checks)")
        if spec.key == "smoke-load":
            ctx.smoke_disabled = True
    elif spec.key == "smoke-load" and not have_key:
        verdict = Verdict(FAIL, "no key for the smoke load: the database is unavailable")
    else:
        try:
            verdict = CHECKS[spec.key](ctx)
        except NoGateway as exc:
            verdict = Verdict(FAIL, describe_failure(exc))
        except Exception as exc:  # a check that crashes fails, with a reason, not the run
            log.warning("readiness check %s: %s: %s", spec.key, type(exc).__name__, exc)
            verdict = Verdict(FAIL, describe_failure(exc))
    return Finding(
        key=spec.key,
        title=spec.title,
        status=verdict.status,
        reason=verdict.reason,
        details=verdict.details,
        duration_ms=int((time.perf_counter() - started) * 1000),
    )


def _store(report: RunReport, run_id: int | None) -> int | None:
    try:
        run = ReadinessRun.objects.filter(pk=run_id).first() if run_id else None
        if run is None:  # run from the command line: stored once it has finished
            run = ReadinessRun(started_at=report.started_at, trigger=report.trigger[:40])
        run.finished_at = report.finished_at
        run.state = report.state
        run.gateway_url = report.gateway_url
        run.save()
        ReadinessResult.objects.bulk_create(
            ReadinessResult(
                run=run,
                check_key=f.key,
                title=f.title,
                status=f.status,
                reason=f.reason,
                details=f.details,
                duration_ms=f.duration_ms,
            )
            for f in report.findings
        )
        return run.pk
    except DatabaseError as exc:
        log.warning("readiness: the run could not be stored: %s", exc)
        return None


def _alert(report: RunReport) -> None:
    from alerts.services import notify

    failures = [f for f in report.findings if f.status == FAIL]
    notify(  # never raises; queued after the commit
        AlertEvent(
            kind="readiness",
            subject="readiness",
            severity="critical",
            title=f"Readiness checklist failed: {len(failures)} check(s)",
            text="\n".join(f"{f.title}: {f.reason}" for f in failures),
            details={
                "run": report.run_id,
                "trigger": report.trigger,
                "failed": [f.key for f in failures],
            },
        )
    )
