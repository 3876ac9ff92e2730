"""deploy/nginx: parsed and checked directive by directive with crossplane (nginx's own
grammar: each directive's context and argument count), the values checked against the
gateway's settings, and `nginx -t` on a copy where the binary is installed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crossplane
import pytest
from django.conf import settings

from tests.deploy.kit import DEPLOY, have

CERT_DIR = "/etc/ssl/clawdbot/"
MAIN = """pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{}}
http {{
    include clawdbot/clawdbot.conf;
}}
"""


def install(tmp: Path, upstreams: str = "gateways.conf") -> Path:
    """The layout deploy/README.md installs (deploy/nginx as <conf>/clawdbot/), under tmp."""
    shutil.copytree(DEPLOY / "nginx", tmp / "clawdbot")
    shutil.copy(DEPLOY / "nginx" / upstreams, tmp / "clawdbot" / "gateways.conf")
    site = tmp / "clawdbot" / "clawdbot.conf"
    site.write_text(site.read_text().replace(CERT_DIR, f"{tmp}/tls/"))
    (tmp / "nginx.conf").write_text(MAIN.format(tmp=tmp))
    return tmp / "nginx.conf"


def directives(block: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for d in block:
        yield d
        if d["directive"] != "map":  # a map's block holds values, not directives
            yield from directives(d.get("block", []))


def args_of(block: list[dict[str, Any]], name: str) -> list[list[str]]:
    """Every `name` directive's arguments directly in this block or its includes."""
    return [d["args"] for d in block if d["directive"] == name]


@pytest.fixture
def parsed(tmp_path: Path) -> list[dict[str, Any]]:
    main = install(tmp_path)
    payload = crossplane.parse(str(main), check_ctx=True, check_args=True, combine=True)
    assert payload["errors"] == [], payload["errors"]
    assert payload["status"] == "ok"
    parsed: list[dict[str, Any]] = payload["config"][0]["parsed"]
    # crossplane takes a directive it does not know for a third-party module's: here every
    # directive must be one of stock nginx's.
    unknown = {d["directive"] for d in directives(parsed)} - set(crossplane.analyzer.DIRECTIVES)
    assert unknown == set()
    return parsed


@pytest.fixture
def http(parsed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return next(d["block"] for d in parsed if d["directive"] == "http")


def servers(http: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [d["block"] for d in http if d["directive"] == "server"]


def tls_server(http: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (server,) = [s for s in servers(http) if ["443", "ssl", "http2"] in args_of(s, "listen")]
    return server


def locations(server: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {" ".join(d["args"]): d["block"] for d in server if d["directive"] == "location"}


def seconds(value: str) -> int:
    assert value.endswith("s"), value
    return int(value[:-1])


def test_upstream_keeps_connections_to_every_gateway_and_closes_them_before_the_gateway(
    http: list[dict[str, Any]],
) -> None:
    (upstream,) = [d for d in http if d["directive"] == "upstream"]
    assert upstream["args"] == ["clawdbot_gateways"]
    block = upstream["block"]
    assert len(args_of(block, "server")) >= 2
    assert int(args_of(block, "keepalive")[0][0]) > 0
    assert seconds(args_of(block, "keepalive_timeout")[0][0]) < settings.CLAWDBOT_HTTP_IDLE_S


def test_plain_http_redirects_to_https(http: list[dict[str, Any]]) -> None:
    (plain,) = [s for s in servers(http) if ["80"] in args_of(s, "listen")]
    assert args_of(locations(plain)["/"], "return") == [["301", "https://$host$request_uri"]]


def test_tls_server_has_certificate_protocols_and_the_gateways_body_limit(
    http: list[dict[str, Any]],
) -> None:
    server = tls_server(http)
    assert args_of(server, "ssl_certificate") and args_of(server, "ssl_certificate_key")
    assert args_of(server, "ssl_protocols") == [["TLSv1.2", "TLSv1.3"]]
    (limit,) = args_of(server, "client_max_body_size")
    assert limit[0].endswith("m")
    assert int(limit[0][:-1]) * 1024 * 1024 == settings.CLAWDBOT_MAX_BODY_BYTES


def test_every_location_proxies_http11_with_the_headers_daphne_reads(
    http: list[dict[str, Any]],
) -> None:
    for path, block in locations(tls_server(http)).items():
        assert args_of(block, "proxy_pass") == [["http://clawdbot_gateways"]], path
        assert args_of(block, "proxy_http_version") == [["1.1"]], path
        headers = {a[0]: a[1] for a in args_of(block, "proxy_set_header")}
        # daphne --proxy-headers trusts the first X-Forwarded-For address: nginx must set it,
        # not append to what the client sent.
        assert headers["X-Forwarded-For"] == "$remote_addr", path
        assert headers["X-Forwarded-Proto"] == "$scheme", path
        assert headers["Host"] == "$host", path
        assert "Connection" in headers, path


def test_data_plane_streams_unbuffered_and_outwaits_the_gateways_timeouts(
    http: list[dict[str, Any]],
) -> None:
    locs = locations(tls_server(http))
    for path in ("/v1/", "= /v1"):
        block = locs[path]
        assert args_of(block, "proxy_buffering") == [["off"]], path
        assert args_of(block, "proxy_cache") == [["off"]], path
        headers = {a[0]: a[1] for a in args_of(block, "proxy_set_header")}
        assert headers["Connection"] == "", path
        assert "Upgrade" not in headers, path
    # A non-streaming answer is silent until done, through every attempt's queue wait,
    # connect and first-byte timeouts: nginx must not give up before the gateway does.
    longest_silence = settings.CLAWDBOT_MAX_ATTEMPTS * (
        settings.CLAWDBOT_QUEUE_TIMEOUT_S
        + settings.CLAWDBOT_CONNECT_TIMEOUT_S
        + settings.CLAWDBOT_FIRST_BYTE_TIMEOUT_S
    )
    (timeout,) = args_of(locs["/v1/"], "proxy_read_timeout")
    assert seconds(timeout[0]) > longest_silence


def test_websocket_paths_pass_the_upgrade(http: list[dict[str, Any]]) -> None:
    (connection_map,) = [d for d in http if d["directive"] == "map"]
    assert connection_map["args"] == ["$http_upgrade", "$clawdbot_connection"]
    locs = locations(tls_server(http))
    for path in ("/ws/", "/"):
        headers = {a[0]: a[1] for a in args_of(locs[path], "proxy_set_header")}
        assert headers["Upgrade"] == "$http_upgrade", path
        assert headers["Connection"] == "$clawdbot_connection", path


def test_metrics_and_readiness_are_for_the_monitoring_network_only(
    http: list[dict[str, Any]],
) -> None:
    locs = locations(tls_server(http))
    for path in ("= /metrics", "= /readyz"):
        block = locs[path]
        assert args_of(block, "allow"), path
        assert args_of(block, "deny") == [["all"]], path
        assert block.index(next(d for d in block if d["directive"] == "deny")) > max(
            i for i, d in enumerate(block) if d["directive"] == "allow"
        ), f"{path}: deny all must come after the allows"


@pytest.mark.slow
@pytest.mark.parametrize("upstreams", ["gateways.conf", "gateways-compose.conf"])
def test_nginx_accepts_the_configuration(tmp_path: Path, upstreams: str) -> None:
    nginx, openssl = have("nginx"), have("openssl")
    if nginx is None or openssl is None:
        pytest.skip("nginx or openssl is not installed: checked by crossplane only")
    main = install(tmp_path, upstreams)
    (tmp_path / "tls").mkdir()
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=clawdbot.test", "-keyout", str(tmp_path / "tls" / "privkey.pem"),
         "-out", str(tmp_path / "tls" / "fullchain.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    if upstreams == "gateways-compose.conf":
        # Compose's service names resolve only on its network; nginx -t resolves them.
        conf = tmp_path / "clawdbot" / "gateways.conf"
        conf.write_text(conf.read_text().replace("gateway-1", "127.0.0.1").replace(
            "gateway-2", "localhost"))  # fmt: skip
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(main)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
