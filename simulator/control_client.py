"""The simulator's control port as a client sees it (tests, benchmarks): set faults and the
speed, read the counters (prefix cache, requests) and the requests it received. Blocking."""

from __future__ import annotations

from typing import Any

import httpx


class SimulatorControl:
    def __init__(self, control_url: str) -> None:
        self.control_url = control_url

    def control(self, **faults: Any) -> dict[str, Any]:
        """Set faults (error_rate, hang, refuse_connections, speed, ..., reset=True); returns
        the state. Goes to the control port, so it works while the main port refuses
        connections."""
        return self._json(httpx.post(f"{self.control_url}/_sim/control", json=faults, timeout=10))

    def stats(self) -> dict[str, Any]:
        return self._json(httpx.get(f"{self.control_url}/_sim/stats", timeout=10))

    def requests(self, limit: int = 200) -> list[dict[str, Any]]:
        """Recorded requests, oldest first: method, path, query, headers, body (parsed JSON)."""
        url = f"{self.control_url}/_sim/requests"
        answer = self._json(httpx.get(url, params={"limit": limit}, timeout=10))
        requests: list[dict[str, Any]] = answer["requests"]
        return requests

    def clear_requests(self) -> None:
        httpx.post(f"{self.control_url}/_sim/requests/clear", timeout=10).raise_for_status()

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result
