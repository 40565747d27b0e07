"""Helpers of the Raft loopback benchmarks (the benchmarks themselves are run by hand): the
pure ones, and the JSON-lines client against a scripted server on loopback."""

from __future__ import annotations

import argparse
import json
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from benchmarks._raft_harness import (
    PutRejected,
    _put_line,
    describe_error,
    make_value,
    open_json_lines_target,
    summarize,
)
from benchmarks._report import percentile, seconds_stats
from benchmarks.raft_loopback import _int_list


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0
    # With 20 values, p99 is the maximum.
    twenty = [float(v) for v in range(20)]
    assert percentile(twenty, 0.99) == 19.0
    assert percentile([7.0], 0.5) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0  # any order


def test_seconds_stats_names_and_rounds_every_figure() -> None:
    figures = seconds_stats([0.30004, 0.1, 0.2], "detect_")
    assert figures == {
        "detect_min_s": 0.1,
        "detect_median_s": 0.2,
        "detect_mean_s": 0.2,
        "detect_p90_s": 0.3,
        "detect_p99_s": 0.3,
        "detect_max_s": 0.3,
    }
    assert seconds_stats([], "") == dict.fromkeys(
        ["min_s", "median_s", "mean_s", "p90_s", "p99_s", "max_s"]
    )


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="not in"):
        percentile([1.0], 1.5)


def test_summarize_scales_sorts_and_rounds() -> None:
    figures = summarize([0.003, 0.001, 0.002], scale=1000.0, suffix="ms", digits=3)
    assert figures["min_ms"] == 1.0
    assert figures["p50_ms"] == 2.0
    assert figures["max_ms"] == 3.0
    assert figures["mean_ms"] == 2.0
    empty = summarize([], scale=1000.0, suffix="ms", digits=3)
    assert empty["p99_ms"] is None


def test_make_value_has_the_size_varies_and_is_plain_in_json() -> None:
    for size in (0, 1, 5, 100, 1024):
        for seq in (1, 123456, 2**40):
            value = make_value(size, seq)
            assert len(value) == size
            assert _put_line(1, "k", value, plain=True) == _put_line(1, "k", value)
    assert make_value(100, 1) != make_value(100, 2)


@pytest.mark.parametrize(
    "value",
    [make_value(1024, 7), make_value(3, 1), b"", b'a"b\\c', b"\x00\x1f\x7f~ !", bytes(range(128))],
)
def test_put_line_is_what_json_makes_of_the_request(value: bytes) -> None:
    """Values with nothing to escape are quoted as they are; the line is the same either way."""
    request = {"id": 3, "op": "put", "key": 'k\u00e9"', "value": value.decode("ascii")}
    expected = json.dumps(request, separators=(",", ":")).encode() + b"\n"
    assert _put_line(3, 'k\u00e9"', value) == expected


def test_describe_error_flattens_groups() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("x")]), KeyError("k")])
    assert describe_error(group) == "ValueError('x'); KeyError('k')"


def test_int_list() -> None:
    assert _int_list("1,16,256") == [1, 16, 256]
    assert _int_list("7") == [7]
    with pytest.raises(argparse.ArgumentTypeError):
        _int_list("1,x")
    with pytest.raises(argparse.ArgumentTypeError):
        _int_list("0")


@pytest.mark.trio
async def test_json_lines_client_pipelines_and_matches_replies_by_id() -> None:
    """Requests go out as compact JSON lines (a put exactly as ``json.dumps`` would write
    it); replies are matched by id whatever their order; a refused put raises PutRejected,
    and once the server closes, pending and later requests raise ConnectionError."""
    received: list[dict[str, Any]] = []
    lines: list[bytes] = []
    hold_last = trio.Event()

    async def server(stream: trio.SocketStream) -> None:
        buffer = b""
        batch: list[dict[str, Any]] = []
        while len(received) < 4:
            buffer += await stream.receive_some(4096)
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                lines.append(line)
                request = json.loads(line)
                received.append(request)
                batch.append(request)
            if len(received) == 3 and batch:
                replies = []
                for request in reversed(batch):  # out of order
                    if request["op"] == "status":
                        reply = {"id": request["id"], "ok": True, "state": "leader", "term": 2}
                    elif request["key"] == "bad":
                        reply = {"id": request["id"], "ok": False, "error": "not_leader"}
                    else:
                        reply = {"id": request["id"], "ok": True}
                    # Compact, as the nodes write them: the status reply matches the
                    # client's pattern for a committed put, and must still reach status().
                    replies.append(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
                batch = []
                await stream.send_all(b"".join(replies))
        await hold_last.wait()
        await stream.aclose()  # the fourth request is never answered

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with open_json_lines_target(port) as target:
            outcomes: dict[str, Any] = {}

            async def put(key: str) -> None:
                try:
                    await target.put(key, b'v"1')
                    outcomes[key] = "ok"
                except PutRejected as exc:
                    outcomes[key] = exc.reason

            with trio.fail_after(10):
                async with trio.open_nursery() as calls:
                    calls.start_soon(put, "good")
                    calls.start_soon(put, "bad")
                    await trio.testing.wait_all_tasks_blocked()
                    status = await target.status()
                assert outcomes == {"good": "ok", "bad": "not_leader"}
                assert status.is_leader
                assert status.term == 2
                first_put = next(line for line in lines if b'"good"' in line)
                rid = json.loads(first_put)["id"]
                expected = {"id": rid, "op": "put", "key": "good", "value": 'v"1'}
                assert first_put == json.dumps(expected, separators=(",", ":")).encode()
                hold_last.set()
                with pytest.raises(ConnectionError):
                    await target.put("last", b"v")
                with pytest.raises(ConnectionError):
                    await target.put("after", b"v")
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_json_lines_client_put_nowait_calls_back_with_the_outcome() -> None:
    """A put started with ``put_nowait`` ends in its callback: None once committed, the
    PutRejected of a refused one, ConnectionError for one pending when the connection
    goes; after that, starting a put raises ConnectionError at once."""
    close = trio.Event()

    async def server(stream: trio.SocketStream) -> None:
        buffer = b""
        answered = 0
        while answered < 2:
            buffer += await stream.receive_some(4096)
            *complete, buffer = buffer.split(b"\n")
            replies = []
            for line in complete:
                request = json.loads(line)
                if answered < 2:
                    ok = request["key"] != "bad"
                    replies.append({"id": request["id"], "ok": ok, "error": "not_leader"})
                    answered += 1
            await stream.send_all(
                b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in replies)
            )
        await close.wait()
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with open_json_lines_target(port) as target:
            outcomes: dict[str, Exception | None] = {}
            done = trio.Event()

            def record(key: str, error: Exception | None) -> None:
                outcomes[key] = error
                if len(outcomes) == 3:
                    done.set()

            with trio.fail_after(10):
                target.put_nowait("good", b"v", partial(record, "good"))
                target.put_nowait("bad", b"v", partial(record, "bad"))
                target.put_nowait("late", b"v", partial(record, "late"))
                await wait_for_outcomes(outcomes, 2)
                close.set()
                await done.wait()
            assert outcomes["good"] is None
            assert isinstance(outcomes["bad"], PutRejected)
            assert outcomes["bad"].reason == "not_leader"
            assert isinstance(outcomes["late"], ConnectionError)
            with pytest.raises(ConnectionError):
                target.put_nowait("after", b"v", partial(record, "after"))
        nursery.cancel_scope.cancel()


async def wait_for_outcomes(outcomes: dict[str, Exception | None], count: int) -> None:
    while len(outcomes) < count:
        await trio.testing.wait_all_tasks_blocked()
