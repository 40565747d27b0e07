"""``DriverConfig``: every problem reported at once, one line each."""

from __future__ import annotations

import pytest

from prism.errors import ConfigError
from prism.raft.driver import DriverConfig


def test_driver_config_defaults_are_valid() -> None:
    assert DriverConfig().problems() == []


def test_driver_config_lists_every_problem() -> None:
    bad = DriverConfig(cluster_id="", disk_stall_timeout_s=0, max_pending_reads=0)
    with pytest.raises(ConfigError) as caught:
        bad.validate()
    assert str(caught.value).splitlines() == [
        "max_pending_reads must be at least 1",
        "disk_stall_timeout_s must be positive",
        "cluster_id must be 1 to 64 characters",
    ]
