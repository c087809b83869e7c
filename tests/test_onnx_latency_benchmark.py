"""The ONNX latency benchmark: alternating rounds, the table, and one tiny real run."""

from __future__ import annotations

import pytest

from benchmarks import onnx_latency as lb


def test_rounds_alternate_which_side_goes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    monkeypatch.setattr(lb, "median_step_microseconds", lambda step, n_steps: order.append(step(0)) or 1.0)
    timings = lb.alternate({"onnx": lambda _: "onnx", "predict": lambda _: "predict"}, n_steps=3, rounds=3)
    assert order == ["onnx", "predict", "predict", "onnx", "onnx", "predict"]
    assert timings == {"onnx": [1.0] * 3, "predict": [1.0] * 3}


def test_median_step_calls_every_observation_once() -> None:
    seen: list[int] = []
    assert lb.median_step_microseconds(seen.append, 5) >= 0
    assert seen == [0, 1, 2, 3, 4]


def test_table() -> None:
    assert lb.table([("policy A", 2048, 10.0, 250.0)]).splitlines()[2] == "| policy A | 2 KiB | 10 µs | 250 µs | 25.0× |"


def test_a_tiny_run(capsys: pytest.CaptureFixture[str]) -> None:
    rows = lb.main(["--rounds", "1", "--steps", "3", "--only", "mlp_discrete", "masked", "--torch-threads", "1"])
    assert [row[0] for row in rows] == [lb.KINDS["mlp_discrete"].label, lb.KINDS["masked"].label]
    assert all(size > 10_000 and onnx_us > 0 and predict_us > 0 for _, size, onnx_us, predict_us in rows)
    assert capsys.readouterr().out.count("\n") == 4  # header, rule, two rows
