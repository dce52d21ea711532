"""Batch-mixing schedules."""

from collections import Counter

import numpy as np
import pytest

from trainables.errors import InputError
from trainables.schedules import schedule

SIZES = {"big": 90, "small": 10}


def test_joint_steps_every_task_until_largest_is_seen():
    plan = schedule("joint").plan(SIZES, np.random.default_rng(0), temperature=2)
    assert len(plan) == 90 and all(step == ["big", "small"] for step in plan)


def test_round_robin_alternates():
    plan = schedule("round_robin").plan(SIZES, np.random.default_rng(0), temperature=2)
    assert len(plan) == 100 and plan[:4] == [["big"], ["small"], ["big"], ["small"]]


def test_proportional_and_temperature_sampling_rates():
    rng = np.random.default_rng(0)
    big = {"big": 9000, "small": 1000}
    prop = Counter(s[0] for s in schedule("proportional").plan(big, rng, temperature=2))
    temp = Counter(s[0] for s in schedule("temperature").plan(big, rng, temperature=2))
    assert prop["small"] / 10000 == pytest.approx(0.1, abs=0.01)
    # T=2: p_small = sqrt(1000) / (sqrt(9000) + sqrt(1000)) = 0.25
    assert temp["small"] / 10000 == pytest.approx(0.25, abs=0.015)


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(InputError, match="valid: joint, round_robin, proportional, temperature"):
        schedule("zigzag")
