"""How a tick's candidates are cut into commits: small first, so the first event goes early."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from monitor.service.engine import COMMIT_SLICE, DECIDE_SLICE, commit_slices


@given(st.integers(min_value=0, max_value=20 * COMMIT_SLICE))
def test_slices_cover_every_candidate_once_in_order(count: int) -> None:
    slices = list(commit_slices(count))
    assert [i for start, end in slices for i in range(start, end)] == list(range(count))
    assert all(end - start <= COMMIT_SLICE for start, end in slices)


def test_a_burst_commits_a_hundred_first_then_doubles_up_to_the_commit_slice() -> None:
    sizes = [end - start for start, end in commit_slices(5_000)]
    assert sizes[:5] == [
        DECIDE_SLICE,
        2 * DECIDE_SLICE,
        4 * DECIDE_SLICE,
        8 * DECIDE_SLICE,
        COMMIT_SLICE,
    ]
    assert sum(sizes) == 5_000
