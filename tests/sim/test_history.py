from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import pytest

from prism.sim.history import (
    History,
    HistoryEvent,
    from_json,
    read_jsonl,
    to_json,
    write_jsonl,
)


def _event(**changes: Any) -> HistoryEvent:
    fields: dict[str, Any] = {
        "process": 1,
        "type": "ok",
        "f": "write",
        "key": "k",
        "value": 3,
        "time": 10,
    }
    fields.update(changes)
    return HistoryEvent(**fields)


SAMPLES = [
    _event(type="invoke", f="write", value=3),
    _event(type="ok", f="write", value=3),
    _event(type="invoke", f="read", value=None),
    _event(type="ok", f="read", value=None),
    _event(type="ok", f="read", value=7),
    _event(type="invoke", f="cas", value=(None, 4)),
    _event(type="fail", f="cas", value=(2, 4)),
    _event(type="info", f="write", value=None),
    _event(type="info", f="cas", value=None),
]


def test_to_json_shape() -> None:
    data = to_json(_event(process=4, type="ok", f="cas", key="k3", value=(1, 2), time=99))
    assert data == {
        "process": 4,
        "type": "ok",
        "f": "cas",
        "key": "k3",
        "value": [1, 2],
        "time": 99,
    }
    assert list(data) == ["process", "type", "f", "key", "value", "time"]
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize("event", SAMPLES)
def test_json_round_trip(event: HistoryEvent) -> None:
    assert from_json(json.loads(json.dumps(to_json(event)))) == event


def test_jsonl_round_trip() -> None:
    sink = io.StringIO()
    write_jsonl(SAMPLES, sink)
    text = sink.getvalue()
    assert text.count("\n") == len(SAMPLES)
    assert read_jsonl(text.splitlines()) == SAMPLES
    assert read_jsonl(["", *text.splitlines(keepends=True), "  \n"]) == SAMPLES


GOOD = {"process": 1, "type": "ok", "f": "read", "key": "k", "value": 5, "time": 7}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "JSON object"),
        ({k: v for k, v in GOOD.items() if k != "time"}, "lacks field"),
        ({**GOOD, "extra": 1}, "unknown field"),
        ({**GOOD, "type": "done"}, "type must be"),
        ({**GOOD, "type": None}, "type must be"),
        ({**GOOD, "f": "delete"}, "f must be"),
        ({**GOOD, "process": True}, "process"),
        ({**GOOD, "process": -1}, "process"),
        ({**GOOD, "process": "n1"}, "process"),
        ({**GOOD, "key": 3}, "key"),
        ({**GOOD, "time": -5}, "time"),
        ({**GOOD, "time": 1.5}, "time"),
        ({**GOOD, "value": "5"}, "bad value"),
        ({**GOOD, "value": [1, 2]}, "only a cas"),
        ({**GOOD, "type": "invoke", "value": 5}, "read invoke carries None"),
        ({**GOOD, "f": "write", "type": "invoke", "value": None}, "int written"),
        ({**GOOD, "f": "write", "value": True}, "int written"),
        ({**GOOD, "f": "cas", "value": [1]}, "cas carries"),
        ({**GOOD, "f": "cas", "value": [1, 2, 3]}, "cas carries"),
        ({**GOOD, "f": "cas", "value": [1, None]}, "cas carries"),
        ({**GOOD, "f": "cas", "value": 5}, "cas carries"),
        ({**GOOD, "f": "cas", "type": "ok", "value": None}, "cas carries"),
    ],
)
def test_from_json_rejects(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_json(data)


def test_read_jsonl_names_the_bad_line() -> None:
    good = json.dumps(GOOD)
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl([good, "{not json", good])
    with pytest.raises(ValueError, match=r"line 3: .*lacks field"):
        read_jsonl([good, "", "{}"])


def test_event_is_frozen_and_validated() -> None:
    event = _event()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.time = 11  # type: ignore[misc]
    with pytest.raises(ValueError, match="type must be"):
        _event(type="maybe")


def test_history_records_pairs() -> None:
    history = History()
    history.invoke(1, "write", "a", 5, 100)
    history.invoke(2, "read", "a", None, 110)
    assert [event.process for event in history.pending()] == [1, 2]
    history.complete(2, "ok", 5, 120)
    history.complete(1, "info", None, 130)
    history.invoke(1, "cas", "b", (None, 1), 140)
    history.complete(1, "fail", (None, 1), 150)
    assert history.pending() == ()
    assert len(history) == 6
    events = history.events
    assert isinstance(events, tuple)
    assert events[2] == HistoryEvent(process=2, type="ok", f="read", key="a", value=5, time=120)
    assert events[3] == HistoryEvent(
        process=1, type="info", f="write", key="a", value=None, time=130
    )
    assert [event.type for event in events] == ["invoke", "invoke", "ok", "info", "invoke", "fail"]


def test_history_rejects_misuse() -> None:
    history = History()
    with pytest.raises(RuntimeError, match="never invoked"):
        history.complete(3, "ok", None, 1)
    history.invoke(3, "read", "a", None, 10)
    with pytest.raises(RuntimeError, match="pending"):
        history.invoke(3, "write", "a", 1, 11)
    with pytest.raises(ValueError, match="ok, fail or info"):
        history.complete(3, "invoke", None, 12)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="before its invoke"):
        history.complete(3, "ok", None, 9)
    with pytest.raises(ValueError, match="bad value"):
        history.complete(3, "ok", (1, 2), 12)
    with pytest.raises(ValueError, match="bad value"):
        history.invoke(4, "write", "a", None, 12)
    # Failed attempts recorded nothing: the read is still pending and can complete.
    assert len(history) == 1
    history.complete(3, "ok", 1, 12)
    assert history.pending() == ()
