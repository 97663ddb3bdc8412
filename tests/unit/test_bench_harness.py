"""The harness's readers and parsers: wrk's result line, HTTP heads, /proc files."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator

import pytest

from notefly.bench import loadgen
from notefly.bench.harness import server_env
from notefly.bench.procs import parent_of, parse_status
from notefly.bench.runner import _selected
from notefly.bench.scenarios.scale import thread_bound
from notefly.bench.seed import CHANNELS, some_channels
from notefly.bench.wrk import MARK, WrkError, lua_script, parse_output
from notefly.config import Settings
from notefly.threads import stat_cpu_seconds

WRK_OUTPUT = f"""Running 8s test @ http://127.0.0.1:5000/pub
  2 threads and 64 connections
  3000 requests in 8.00s, 600.00KB read
  Non-2xx or 3xx responses: 100
{MARK}{{"requests":3000,"duration_us":8000000,"connect_errors":0,"read_errors":1,\
"write_errors":0,"status_errors":100,"timeouts":2,"p50_us":12500,"p90_us":30000,\
"p99_us":48000,"max_us":90000}}
"""


def test_wrk_result_counts_only_2xx_answers_in_the_rate():
    result = parse_output(WRK_OUTPUT)
    assert result.ok == 2900
    assert result.rate == pytest.approx(362.5)
    assert result.errors == 3
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (12.5, 48.0, 90.0)


def test_wrk_output_without_a_result_line_is_an_error():
    with pytest.raises(WrkError, match="no result"):
        parse_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_script_posts_the_body_unchanged():
    body = json.dumps({"category": "x", "body": "a ]] tricky ]=] body"})
    script = lua_script(body)
    assert 'wrk.method = "POST"' in script
    assert f"[==[{body}]==]" in script  # a long bracket the body cannot close
    assert MARK in script


def test_http_head_is_read_with_lower_case_headers():
    status, headers = loadgen.parse_head(
        b"HTTP/1.1 202 \r\nContent-Length: 12\r\nContent-Type: application/json\r\n\r\n"
    )
    assert status == 202
    assert headers == {"content-length": "12", "content-type": "application/json"}


def test_a_head_that_is_not_http_is_an_error():
    with pytest.raises(loadgen.HttpError):
        loadgen.parse_head(b"SSH-2.0-OpenSSH\r\n\r\n")


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    """A tiny HTTP server on loopback: answers 202 with the body it got, chunked
    every other time, and closes after the fourth request of a connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for served in range(4):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                loadgen.parse_head(b"HTTP/1.1 200 x\r\n" + head.split(b"\r\n", 1)[1])[1].get(
                    "content-length", "0"
                )
            )
            body = await reader.readexactly(length)
            close = b"Connection: close\r\n" if served == 3 else b""
            if served % 2:
                chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
                writer.write(
                    b"HTTP/1.1 202 OK\r\nTransfer-Encoding: chunked\r\n" + close + b"\r\n" + chunks
                )
            else:
                writer.write(
                    b"HTTP/1.1 202 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), close, body)
                )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


async def test_paced_requests_keep_their_order_times_and_answers(echo_server: str):
    sent = await loadgen.paced(
        echo_server,
        "/pub",
        rate=200,
        count=10,
        body=lambda i: b'{"n": %d}' % i,
        connections=2,
    )
    assert [s.index for s in sent] == list(range(10))
    assert [s.status for s in sent] == [202] * 10
    assert [json.loads(s.body)["n"] for s in sent] == list(range(10))
    # Request i was due 1/200 s after request i - 1 and not sent before it was due.
    assert all(b.due - a.due == pytest.approx(0.005) for a, b in itertools.pairwise(sent))
    assert all(s.sent >= s.due and s.answered >= s.sent for s in sent)


async def test_a_request_without_an_answer_is_given_up_after_its_time():
    """Status 0 after ``request_seconds``; the next request goes on a new connection."""
    connections = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read()  # never answers; returns when the client hangs up

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        sent = await loadgen.paced(
            url,
            "/pub",
            rate=100,
            count=2,
            body=lambda i: b"{}",
            connections=1,
            request_seconds=0.2,
        )
    finally:
        server.close()
        await server.wait_closed()
    assert [s.status for s in sent] == [0, 0]
    assert all(0.19 < s.answered - s.sent < 2.0 for s in sent)
    assert len(connections) == 2


def test_proc_status_gives_memory_and_threads():
    text = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t17\n"
    use = parse_status(42, text)
    assert (use.rss_kib, use.peak_rss_kib, use.threads) == (102400, 204800, 17)


def test_a_zombie_without_memory_lines_is_an_error():
    with pytest.raises(ValueError, match="VmHWM"):
        parse_status(42, "Name:\tpython\nThreads:\t1\n")


def test_proc_stat_fields_after_a_name_with_spaces_and_parentheses():
    stat = "4242 (python (x) y) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9"
    assert parent_of(stat) == 17
    assert stat_cpu_seconds(stat, ticks=100) == pytest.approx(3.0)


def test_thread_bound_follows_configuration_not_users():
    small = thread_bound(Settings(), categories=1, cpus=2)
    assert small == 1 * 3 + 1 + 6 + 8  # a shard for each of 3 channels, 1 category
    more_shards = thread_bound(Settings(shards_per_channel=8), categories=1, cpus=2)
    assert more_shards - small == 7 * 3


def test_channel_choice_gives_one_to_three_channels_two_on_average():
    choose = some_channels()
    picks = [choose(i) for i in range(10_000)]
    assert {len(p) for p in picks} == {1, 2, 3}
    assert all(set(p) <= set(CHANNELS) for p in picks)
    assert 1.9 < sum(map(len, picks)) / len(picks) < 2.1
    again = some_channels()
    assert picks == [again(i) for i in range(10_000)]  # reproducible


def test_servers_log_at_warning_and_get_no_bench_owned_variables():
    env = server_env(
        {
            "NOTEFLY_DATA_DIR": "x",
            "NOTEFLY_ROUND_SIZE": "64",
            "PATH": "/bin",
            "NOTEFLY_LOG_LEVEL": "debug",
        }
    )
    assert env["NOTEFLY_LOG_LEVEL"] == "warning"
    assert env["NOTEFLY_ROUND_SIZE"] == "64"
    assert "NOTEFLY_DATA_DIR" not in env


def test_scenarios_run_in_their_order_whatever_order_they_are_named_in():
    assert _selected("latency,ingest") == ["ingest", "latency"]
    assert _selected(None)[0] == "ingest"
    with pytest.raises(SystemExit, match="unknown scenario nope"):
        _selected("nope")
