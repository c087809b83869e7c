"""The pure parts of the data-parallel benchmark: pairing each burst with the 1-process bursts around it."""

from __future__ import annotations

import pytest

from benchmarks import distributed as db


def test_each_burst_is_compared_with_the_mean_of_its_neighbouring_reference_bursts() -> None:
    sequence = [("1", 100.0), ("A", 190.0), ("1", 90.0), ("B", 150.0), ("1", 110.0), ("A", 200.0), ("1", 100.0)]
    ratios = db.paired_ratios(sequence, reference="1")
    assert ratios["A"] == pytest.approx([190 / 95, 200 / 105])
    assert ratios["B"] == pytest.approx([150 / 100])
    assert ratios["1"] == [1.0, 1.0, 1.0, 1.0]


def test_a_burst_at_either_end_uses_the_one_neighbour_there_is() -> None:
    ratios = db.paired_ratios([("A", 300.0), ("1", 100.0), ("A", 160.0)], reference="1")
    assert ratios["A"] == pytest.approx([3.0, 1.6])


def test_pairing_without_any_reference_burst_is_refused() -> None:
    with pytest.raises(ValueError, match="no '1' burst"):
        db.paired_ratios([("A", 1.0)], reference="1")


def test_quartiles_are_inclusive_and_degenerate_for_one_value() -> None:
    assert db.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx((2.0, 3.0, 4.0))
    assert db.quartiles([7.0]) == (7.0, 7.0, 7.0)


def test_communication_is_totalled_over_bursts_per_update() -> None:
    bursts = [
        {"updates": 2, "all_reduce_calls": 6, "all_reduce_bytes": 200, "by_kind": {"integers": [2, 32, 0.02]}},
        {
            "updates": 3,
            "all_reduce_calls": 9,
            "all_reduce_bytes": 300,
            "by_kind": {"integers": [3, 48, 0.03], "tensor": [1, 8, 0.5]},
        },
    ]
    communication = db._communication(bursts)
    assert communication["calls"] == pytest.approx(3.0)
    assert communication["bytes"] == pytest.approx(100.0)
    assert communication["by_kind"]["integers"] == pytest.approx([1.0, 16.0, 0.01])
    assert communication["by_kind"]["tensor"] == pytest.approx([0.2, 1.6, 0.1])
