"""Shared test configuration.

Seeded tests print their seed and the command that replays them when they fail; nothing
here sleeps on the wall clock. ``PRISM_EXPLORE_SEEDS`` sets how many explore seeds run
(200 by default, as CI does; set 100000 for an overnight run).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# CI replays the same examples on every run (reproducible verdicts); a person's runs keep
# exploring new ones.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def explore_seed_count() -> int:
    return int(os.environ.get("PRISM_EXPLORE_SEEDS", "200"))


@pytest.fixture
def explore_seeds() -> int:
    return explore_seed_count()
