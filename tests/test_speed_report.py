"""The speed sections of docs/benchmarks.md: rendered from the result files alone, and the docs are that rendering."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import sections, speed_report

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"


def summary(title: str, speed_up: float, overhead: float, with_ppo: bool = True) -> dict[str, Any]:
    row = {
        "steps_per_s": 1000.0,
        "rollout_share": 0.7,
        "update_share": 0.25,
        "rest_share": 0.05,
        "rollout_us_per_step": 400.0,
        "overhead": overhead,
    }
    implementations = {"ours": row, "sb3-contrib": {**row, "steps_per_s": 1000.0 / speed_up}}
    if with_ppo:
        implementations["ppo"] = {**row, "steps_per_s": 321.0}
    return {
        "title": title,
        "implementations": implementations,
        "bare_us_per_step": 100.0,
        "speed_up": speed_up,
        "speed_up_min": speed_up - 0.1,
        "speed_up_max": speed_up + 0.1,
        "rounds": 3,
        "setup": {"n_envs": 2, "n_steps": 512, "timesteps": 4096, "normalize": False},
    }


def record(benchmark: str, results: dict[str, Any], **run: str) -> dict[str, Any]:
    return {"benchmark": benchmark, "command": "python -m benchmarks.x", "machine": "test", "date": "today", **run} | {
        "results": results
    }


def test_end_to_end_section() -> None:
    results = {"cartpole": summary("CartPole-v1", 2.6, 1.25), "halfcheetah": summary("HalfCheetah-v5", 1.2, 0.4, False)}
    text = speed_report.end_to_end_section(record("end_to_end", results, load_average="0.5/1.0/1.5"))
    lines = text.splitlines()
    assert lines[:7] == [
        "## Speed: end-to-end `learn()` against sb3-contrib's TRPO",
        "",
        "Command: `python -m benchmarks.x`  ",
        "Machine: test  ",
        "Load average at the start: 0.5/1.0/1.5 (1/5/15 min)  ",
        "Date: today",
        "",
    ]
    assert "| CartPole-v1 | 2 × 512 | 4096 | 1000 | 385 | 321 | **2.60×** (2.50–2.70) |" in lines
    assert "| HalfCheetah-v5 | 2 × 512 | 4096 | 1000 | 833 | — | **1.20×** (1.10–1.30) |" in lines
    assert "| CartPole-v1 | ours | 70% | 25% | 5% | 400.0 | 1.25× |" in lines
    assert "| CartPole-v1 | PPO | 70% | 25% | 5% | 400.0 | 1.25× |" in lines
    assert "| HalfCheetah-v5 | bare env stepping | — | — | — | 100.0 | — |" in lines
    assert not any(line.startswith("| HalfCheetah-v5 | PPO") for line in lines)
    assert "one update each;\n3 rounds." in text
    assert "target" not in text.lower()  # the targets are the docs' (beside the section), not the benchmark's


def test_pipelined_critic_section() -> None:
    def rates(value: float) -> dict[str, float]:
        return {"steps_per_s": value, "rollout_share": 0.8, "update_share": 0.2}

    job = {"features": 16384, "returns": 4096, "shuffles": 163840, "weights_and_optimizer": 54564, "total": 238884}
    cartpole = {
        "title": "CartPole-v1",
        "implementations": {"pipelined": rates(17000.4), "sequential": rates(14000.0), "sb3-contrib": rates(4500.0)},
        "ratios": {
            "pipelined/sequential": {"median": 1.214, "min": 1.1, "max": 1.3},
            "pipelined/sb3-contrib": {"median": 3.777, "min": 3.5, "max": 3.9},
            "sequential/sb3-contrib": {"median": 3.111, "min": 3.0, "max": 3.2},
        },
        "fits": {"in_worker": 450, "in_process": 35, "worker_share": 450 / 485, "worker_share_min": 0.9},
        "memory": {"job_bytes": job, "rollout_bytes": 20480, "worker_peak_kib": 327084},
        "rounds": 5,
        "setup": {"n_envs": 2, "n_steps": 512, "timesteps": 100352, "updates": 98, "normalize": False},
    }
    hopper = {
        **cartpole,
        "title": "Hopper-v5",
        "memory": {"job_bytes": None, "rollout_bytes": 98304, "worker_peak_kib": None},
        "setup": {"n_envs": 2, "n_steps": 1024, "timesteps": 100352, "updates": 49, "normalize": True},
    }
    results = {
        "ready_worker_peak_kib": 325064,
        "cpu_count": 2,
        "usable_cores": 2,
        "releases": {"torch": "2.13.0", "sb3_trpo_plugin_git": "abc1234"},
        "configs": {"cartpole": cartpole, "hopper": hopper},
    }
    text = speed_report.pipelined_critic_section(
        record("pipelined_critic", results, load_average="0.1/0.2/0.3", load_average_after="1.0/0.5/0.4")
    )
    lines = text.splitlines()
    assert lines[0] == "## Speed: the pipelined critic, end to end (issue #30)"
    assert "Load average at the start: 0.1/0.2/0.3 (1/5/15 min)  " in lines
    assert "load average at the end: 1.0/0.5/0.4." in text and "Releases: torch 2.13.0, sb3_trpo_plugin_git abc1234." in text
    assert "2 usable by the benchmark's process" in text and "5 rounds." in text
    assert (
        "| CartPole-v1 | 2 × 512 | 100352 (98) | 17000 | 14000 | 4500 | **1.21×** (1.10–1.30) | **3.78×** (3.50–3.90) "
        "| **3.11×** (3.00–3.20) | 450 of 485: 93% (90%) |"
    ) in lines
    assert "| CartPole-v1 | 20 | 16 / 4 / 160 / 53 | 233 | 11.7× | 319 |" in lines
    assert "| Hopper-v5 | 96 | — | — | — | — |" in lines
    assert "before any job: 317 MiB." in text
    assert "target" not in text.lower()


def test_train_section_takes_the_median_of_the_configurations_and_marks_missing_memory() -> None:
    results = {
        "train": {name: {"ours_s": 0.01, "contrib_s": 0.01 * r, "ratio": r} for name, r in zip("abc", (2, 4, 3), strict=True)},
        "memory": {"a": {"ours": 6.66, "sb3-contrib": 7.0}},
        "descriptions": {"a": "first", "b": "second", "c": "third"},
    }
    lines = speed_report.train_section(record("train", results)).splitlines()
    assert lines[0] == "## Speed: one `train()` against sb3-contrib's TRPO"
    assert "| first | 0.0100 | 0.0200 | **2.00×** | 6.7 / 7.0 |" in lines
    assert "| second | 0.0100 | 0.0400 | **4.00×** | — |" in lines
    assert "Median speed-up over the configurations: **3.00×**." in lines


def test_a_section_leaves_the_others_alone() -> None:
    document = sections.replace_section("", "speed", "train() table")
    document = sections.replace_section(document, "speed_end_to_end", "learn() v1")
    document = sections.replace_section(document, "speed_end_to_end", "learn() v2")
    assert "train() table" in document
    assert "learn() v2" in document and "learn() v1" not in document
    assert document.count("<!-- speed:start -->") == document.count("<!-- speed_end_to_end:start -->") == 1


def test_one_section_per_result_file(tmp_path: Path) -> None:
    e2e = record("end_to_end", {"cartpole": summary("CartPole-v1", 2.6, 1.25)})
    (tmp_path / "a.json").write_text(json.dumps(e2e))
    assert list(speed_report.render_all(tmp_path)) == ["speed_end_to_end"]
    (tmp_path / "b.json").write_text(json.dumps(e2e))
    with pytest.raises(ValueError, match="a second result for the section 'speed_end_to_end'"):
        speed_report.render_all(tmp_path)
    (tmp_path / "b.json").write_text(json.dumps({"sequence": []}))
    with pytest.raises(ValueError, match="not a speed result"):
        speed_report.render_all(tmp_path)


def docs_section(name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", BENCHMARKS_MD.read_text(), re.DOTALL)
    assert match, f"no section {name} in {BENCHMARKS_MD}"
    return match.group(1)


def test_the_docs_speed_sections_are_the_rendering_of_the_committed_results() -> None:
    rendered = speed_report.render_all(speed_report.RESULTS)
    assert set(rendered) == {
        "speed",
        "speed_recurrent",
        "speed_masked",
        "speed_recurrent_learn",
        "speed_end_to_end",
        "speed_pipelined_critic",
    }
    for name, text in rendered.items():
        assert docs_section(name) == text, f"docs/benchmarks.md's {name} section: run python -m benchmarks.speed_report"


def test_the_docs_targets_read_the_committed_end_to_end_results() -> None:
    results = json.loads((speed_report.RESULTS / "end_to_end.json").read_text())["results"]
    by_title = {summary["title"]: summary for summary in results.values()}
    page = BENCHMARKS_MD.read_text()
    targets = page[page.index("### Targets of the end-to-end speed") :].split("\n### ")[0]
    rows = re.findall(r"^\| (.+?) \| ([\d.]+)× \| (yes|no) \|$", targets, re.MULTILINE)
    assert len(rows) == 6
    for target, measured, holds in rows:
        if speed_up := re.fullmatch(r"`learn\(\)` ≥ ([\d.]+)× sb3-contrib's on (.+)", target):
            bound, value = float(speed_up[1]), by_title[speed_up[2]]["speed_up"]
            reached = value >= bound
        else:
            overhead = re.fullmatch(r"our rollout's overhead ≤ ([\d.]+)× bare env stepping on (.+)", target)
            assert overhead, target
            bound, value = float(overhead[1]), by_title[overhead[2]]["implementations"]["ours"]["overhead"]
            reached = value <= bound
        assert measured == f"{value:.2f}", target
        assert holds == ("yes" if reached else "no"), target


def test_the_report_does_not_import_torch() -> None:
    code = "import sys, benchmarks.speed_report; print('torch' in sys.modules, 'stable_baselines3' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "False"]
