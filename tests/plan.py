"""Scenario sizes: CI-sized by default, RELIABILITY.md's own numbers when
``TASKMILL_TEST_PLAN_SIZE=1`` (the plan-size step of ``.ci/run``).

A test sized with :func:`sized` carries the ``plan_size`` marker, so that step can select
exactly the scenarios that otherwise run smaller than the plan.
"""

from __future__ import annotations

import os
from typing import TypeVar

import pytest

T = TypeVar("T")

PLAN_SIZE = os.environ.get("TASKMILL_TEST_PLAN_SIZE", "") == "1"

plan_size = pytest.mark.plan_size


def sized(ci: T, plan: T) -> T:
    """``plan`` (RELIABILITY.md's number) in the plan-size step, ``ci`` otherwise."""
    return plan if PLAN_SIZE else ci
