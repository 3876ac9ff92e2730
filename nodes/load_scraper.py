"""One scrape of the nodes' /metrics for their server-reported load (nodes.server_load), run
by the beat's `scrape_server_load` task: never on a request's path. Each node is asked at
once with a short timeout, so one server slow to answer under load delays nobody; its last
values stay (marked stale) until they expire."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx

from nodes import server_load_store
from nodes.prometheus_text import parse
from nodes.server_load import ServerLoad, gauges_for, read_load

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    base_url: str
    kind: str


@dataclass(frozen=True, slots=True)
class Scraped:
    name: str
    load: ServerLoad | None = None
    error: str = ""  # the scrape failed: the last values are kept, marked stale
    absent: bool = False  # answered, without the kind's gauges (metrics turned off)


async def scrape_one(client: httpx.AsyncClient, target: Target) -> Scraped:
    gauges = gauges_for(target.kind)
    if gauges is None:
        return Scraped(target.name, absent=True)
    try:
        response = await client.get(target.base_url.rstrip("/") + "/metrics")
    except httpx.TimeoutException:
        return Scraped(target.name, error="GET /metrics timed out")
    except httpx.HTTPError as exc:
        return Scraped(target.name, error=f"GET /metrics failed: {exc.__class__.__name__}")
    if response.status_code in (404, 501):
        # llama-server without --metrics answers 501; a server of another kind, 404.
        return Scraped(target.name, absent=True)
    if response.status_code != 200:
        return Scraped(target.name, error=f"GET /metrics answered HTTP {response.status_code}")
    load = read_load(target.kind, parse(response.text, gauges.names))
    if load is None:
        return Scraped(target.name, absent=True)
    return Scraped(target.name, load=load)


async def scrape_all(targets: list[Target], timeout_s: float) -> list[Scraped]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s)) as client:
        return await asyncio.gather(*(scrape_one(client, t) for t in targets))


def scrape_and_store(targets: list[Target], timeout_s: float) -> list[Scraped]:
    """Scrape, then write each node's hash: new values, stale ones, or none."""
    results = asyncio.run(scrape_all(targets, timeout_s))
    now_ms = int(time.time() * 1000)
    for scraped in results:
        if scraped.load is not None:
            server_load_store.publish(scraped.name, scraped.load, now_ms)
        elif scraped.absent:
            server_load_store.forget(scraped.name)
        else:
            server_load_store.mark_stale(scraped.name)
            log.info("server load of %s kept, stale: %s", scraped.name, scraped.error)
    return results
