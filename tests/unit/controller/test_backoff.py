from __future__ import annotations

import pytest

from controller.local.runtime.backoff import BackoffPolicy, CrashCounter


@pytest.mark.parametrize(
    ("crashes", "delay"),
    [
        pytest.param(1, 0.0, id="first-crash-restarts-at-once"),
        pytest.param(2, 1.0, id="second"),
        pytest.param(3, 2.0, id="third"),
        pytest.param(5, 8.0, id="fifth"),
        pytest.param(6, 10.0, id="capped"),
        pytest.param(50, 10.0, id="stays-capped"),
    ],
)
def test_delay_doubles_up_to_the_cap(crashes: int, delay: float) -> None:
    assert BackoffPolicy().delay(crashes) == delay


def test_counter_resets_after_a_healthy_run() -> None:
    counter = CrashCounter(BackoffPolicy(base=0.5, cap=4.0, reset_after=10.0))
    delays = [counter.crashed(ran_for=0.1) for _ in range(6)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert counter.crashed(ran_for=30.0) == 0.0
    assert counter.crashed(ran_for=1.0) == 0.5
    assert counter.crashes == 2
    assert counter.restarts == 8
