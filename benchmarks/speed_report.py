"""
The speed sections of ``docs/benchmarks.md``, from the result files of the speed benchmarks.

Every ``*.json`` in ``benchmarks/results/speed/`` (written by ``speed_train``, ``speed_recurrent_train``,
``speed_variants``, ``speed_end_to_end`` or ``speed_pipelined_critic``) becomes its section; the sections of
comparisons without a file are left as they are. Pure functions of the files: importing this module does not import
torch, and rendering the same files gives the same Markdown. The targets that the results are read against are stated
in the docs, beside the sections.

Usage (from the repository root)::

    python -m benchmarks.speed_report                       # rewrites the speed sections of docs/benchmarks.md
    python -m benchmarks.speed_report --results /tmp/speed --no-write
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import sections
from benchmarks.launch import ROOT

RESULTS = ROOT / "benchmarks" / "results" / "speed"
#: The docs section of each kind of result file (a variant comparison's is ``speed_<its name>``).
SECTIONS = {
    "train": "speed",
    "recurrent_train": "speed_recurrent",
    "end_to_end": "speed_end_to_end",
    "pipelined_critic": "speed_pipelined_critic",
}
#: The rows of the end-to-end tables.
E2E_LABELS = {"ours": "ours", "sb3-contrib": "sb3-contrib", "ppo": "PPO", "bare": "bare env stepping"}
#: The paragraph under each variant comparison's table.
VARIANT_NOTES = {
    "masked": "The lean rollout samples the same actions as sb3-contrib's loop for a seed (bit for bit; "
    "`tests/test_masked_rollout.py`), so the two MaskableTRPO rows train the same policy; MaskablePPO's update "
    "is different work (10 epochs of minibatches), shown for scale.",
    "recurrent_learn": "The lean inference computes the policy's forward bit for bit (`tests/test_recurrent_rollout.py`), "
    "so the two RecurrentTRPO rows train the same policy; RecurrentPPO's update is different work (20 epochs of "
    "minibatches), shown for scale.",
}
VARIANT_IMPLEMENTATIONS = ("lean", "peer_loop", "peer")


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def _header(title: str, record: Mapping[str, Any]) -> list[str]:
    """The section's title, command, machine (and load average where recorded) and date."""
    lines = [f"## Speed: {title}", "", f"Command: `{record['command']}`  ", f"Machine: {record['machine']}  "]
    if "load_average" in record:
        lines.append(f"Load average at the start: {record['load_average']} (1/5/15 min)  ")
    return [*lines, f"Date: {record['date']}", ""]


def train_section(record: Mapping[str, Any]) -> str:
    """
    The ``train()`` section: per configuration the median times, the speed-up and the peak memory growth.

    :param record: a result file of ``benchmarks.speed_train``
    """
    results = record["results"]
    lines = _header("one `train()` against sb3-contrib's TRPO", record)
    lines += [
        "| configuration | ours (s) | sb3-contrib (s) | speed-up | peak memory growth ours / contrib (MiB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in results["train"].items():
        memory = results["memory"].get(name)
        memory_text = f"{memory['ours']:.1f} / {memory['sb3-contrib']:.1f}" if memory else "—"
        times = f"{row['ours_s']:.4f} | {row['contrib_s']:.4f} | **{row['ratio']:.2f}×**"
        lines.append(f"| {results['descriptions'][name]} | {times} | {memory_text} |")
    ratios = [row["ratio"] for row in results["train"].values()]
    lines += [
        "",
        f"Median speed-up over the configurations: **{statistics.median(ratios):.2f}×**.",
        "",
        "Times are medians over repetitions from identical weights and an identical rollout buffer, alternating the two",
        "implementations in one process; the speed-up is the median of per-pair ratios. Memory: peak RSS during one",
        "`train()` minus RSS before it, in a fresh process per implementation (first update after the rollout), median",
        "of 3 such processes each. End-to-end `learn()`: the section below.",
        "",
        "Where the time goes: the policy step is 2-3× faster than sb3-contrib's (one autograd call for the gradient",
        "instead of two per parameter tensor, closed-form Fisher products, no copies in the line search); for plain MLP",
        "actors the Jacobian products inside the Fisher products are derived by hand (about 1.6× faster each than",
        "autograd's double backpropagation). The critic's regression, many small minibatch steps bound by per-operation",
        "overhead, is 2-2.5× faster: for SB3's plain MLP critic its gradient is derived by hand (a dozen tensor",
        "operations, no autograd graph), `tanh` runs in NumPy, the features are computed once per update when the",
        "critic's extractor is constant, and torch's fused Adam kernel steps the critic's parameters only, called as",
        "`Adam.step` calls it without its per-call bookkeeping (the same update bit for bit). The CNN configuration",
        "keeps autograd for the actor (its features extractor is the actor's), hence the smaller speed-up there.",
    ]
    return "\n".join(lines)


def recurrent_train_section(record: Mapping[str, Any]) -> str:
    """
    The RecurrentTRPO ``train()`` section.

    :param record: a result file of ``benchmarks.speed_recurrent_train``
    """
    result = record["results"]
    lines = _header("one `train()` of RecurrentTRPO (and of sb3-contrib's RecurrentPPO, for scale)", record)
    lines += [
        "| configuration | RecurrentTRPO `train()` (s) | RecurrentPPO `train()` (s) |",
        "| --- | ---: | ---: |",
        f"| {result['description']} | {result['RecurrentTRPO']:.3f} | {result['RecurrentPPO']:.3f} |",
        "",
        "Medians over repetitions from identical weights on one rollout buffer. RecurrentTRPO's update is one",
        "trust-region step (the actor's LSTM re-run over the batch's sequences in one LSTM call per evaluation) and 10",
        "epochs of the critic LSTM's regression over minibatches of 256 steps; RecurrentPPO's is 20 epochs of",
        "minibatches of 256 steps (rl-zoo3's settings for this task). Different work: the cost of one update of each.",
    ]
    return "\n".join(lines)


def variant_section(record: Mapping[str, Any]) -> str:
    """
    A variant comparison's section: the lean rollout, the peer's loop and the peer.

    :param record: a result file of ``benchmarks.speed_variants``
    """
    result = record["results"]
    labels = result["labels"]
    lean_label = labels["lean"]
    lines = _header(result["title"], record)
    lines += [
        f"{result['description']}; {result['timesteps']} steps per run, {result['rounds']} rounds, each running every",
        "implementation once in an order rotated from round to round (after a discarded warm-up round). Steps/s and",
        f"rollout µs per env step: medians over rounds; speed-up of the lean {lean_label}: median of per-round ratios.",
        "",
        "| implementation | steps/s | share of time in the rollout | rollout µs per env step "
        f"| lean {lean_label}'s speed-up |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in VARIANT_IMPLEMENTATIONS:
        row = result["implementations"][name]
        speed_up = f"**{row['lean_speed_up']:.2f}×**" if "lean_speed_up" in row else "—"
        lines.append(
            f"| {labels[name]} | {row['steps_per_s']:.0f} | {_percent(row['rollout_share'])} | "
            f"{row['rollout_us_per_step']:.1f} | {speed_up} |"
        )
    lines += ["", VARIANT_NOTES[result["name"]]]
    return "\n".join(lines)


def end_to_end_section(record: Mapping[str, Any]) -> str:
    """
    The end-to-end section: steps per second and speed-ups, then where the time goes.

    :param record: a result file of ``benchmarks.speed_end_to_end``: per configuration the summary of
        ``summarize_end_to_end`` with its ``"title"`` and ``"setup"`` (``n_envs``, ``n_steps``, ``timesteps``)
    """
    results = record["results"]
    rounds = sorted({summary["rounds"] for summary in results.values()})
    lines = _header("end-to-end `learn()` against sb3-contrib's TRPO", record)
    lines += [
        "`learn()` from scratch with rl-zoo3's tuned TRPO settings (`hyperparams/trpo.yml`; its Hopper-v4 and",
        "HalfCheetah-v4 entries for the v5 envs, `normalize: true` there: `VecNormalize`), this TRPO against",
        "sb3-contrib's, and SB3's PPO for reference: SB3's defaults (64×64 networks, 10 epochs of minibatches of 64)",
        "at the TRPO preset's `n_envs` and `n_steps`, with its gSDE settings where it has them. All three train on",
        "the same VecEnv construction (`make_vec_env`, `VecNormalize` where the preset normalises), fresh for each",
        "run. Each round runs every implementation once, in an order that rotates from round to round, and steps the",
        "bare VecEnv right before and right after our run (the overhead divides by the mean of the two, so that the",
        "machine's drift between them mostly cancels), after one discarded warm-up round of one update each;",
        f"{'/'.join(map(str, rounds))} rounds.",
        "Steps/s: median over rounds; speed-up: median (and range) of the per-round ratios ours / sb3-contrib.",
        "",
        "| configuration | steps per update | steps per run | ours (steps/s) | sb3-contrib (steps/s) | PPO (steps/s) "
        "| speed-up ours / contrib (range) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for summary in results.values():
        setup, rates = summary["setup"], summary["implementations"]
        ppo = f"{rates['ppo']['steps_per_s']:.0f}" if "ppo" in rates else "—"
        lines.append(
            f"| {summary['title']} | {setup['n_envs']} × {setup['n_steps']} | {setup['timesteps']} "
            f"| {rates['ours']['steps_per_s']:.0f} | {rates['sb3-contrib']['steps_per_s']:.0f} | {ppo} "
            f"| **{summary['speed_up']:.2f}×** ({summary['speed_up_min']:.2f}–{summary['speed_up_max']:.2f}) |"
        )
    lines += [
        "",
        "Where the time goes: shares of `learn()`'s wall time (summed over rounds) inside `collect_rollouts` and",
        "`train` (timers the benchmark wraps around the model instance's methods), µs per env step inside",
        "`collect_rollouts` (medians over rounds), and the rollout's overhead above bare env stepping, (rollout −",
        "bare) / bare, per round, median over rounds. Bare env stepping: the same VecEnv and wrappers (`Monitor`,",
        "`VecNormalize` where used) stepped with uniformly random actions sampled before the timing, nothing else.",
        "",
        "| configuration | implementation | rollout | update | rest | rollout µs per env step | overhead above stepping |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for summary in results.values():
        title = summary["title"]
        for implementation, row in summary["implementations"].items():
            lines.append(
                f"| {title} | {E2E_LABELS.get(implementation, implementation)} | {_percent(row['rollout_share'])} "
                f"| {_percent(row['update_share'])} | {_percent(row['rest_share'])} | {row['rollout_us_per_step']:.1f} "
                f"| {row['overhead']:.2f}× |"
            )
        lines.append(f"| {title} | {E2E_LABELS['bare']} | — | — | — | {summary['bare_us_per_step']:.1f} | — |")
    return "\n".join(lines)


def _ratio(ratio: Mapping[str, float]) -> str:
    """A median ratio in bold, with its range over rounds."""
    return f"**{ratio['median']:.2f}×** ({ratio['min']:.2f}–{ratio['max']:.2f})"


def _kib(n_bytes: float) -> str:
    return f"{n_bytes / 1024:.0f}"


def pipelined_critic_section(record: Mapping[str, Any]) -> str:
    """
    The pipelined critic's section: steps per second of the three implementations, their ratios, the share of the
    fits that ran in the worker, and the memory of the fit jobs and of the worker.

    :param record: a result file of ``benchmarks.speed_pipelined_critic``
    """
    results = record["results"]
    configs = results["configs"]
    releases = ", ".join(f"{name} {version}" for name, version in results["releases"].items())
    rounds = sorted({summary["rounds"] for summary in configs.values()})
    lines = _header("the pipelined critic, end to end (issue #30)", record)
    lines += [
        f"Cores: {results['cpu_count']} (`os.cpu_count()`), {results['usable_cores']} usable by the benchmark's process "
        f"(`os.sched_getaffinity`); load average at the end: {record['load_average_after']}.  ",
        f"Releases: {releases}.",
        "",
        "`learn()` from scratch with rl-zoo3's tuned TRPO settings (the VecEnvs of the end-to-end section above):",
        "this TRPO with its critic pipelined (the default: the critic of update k is fitted in a worker process while",
        "rollout k+1 is collected, the same weights bit for bit), the same TRPO with `pipeline_critic = False` (the",
        "critic fitted in this process after the policy step), and sb3-contrib's TRPO. Each round runs the three once,",
        "fresh models on fresh envs, in an order that rotates from round to round, after one discarded warm-up round",
        f"of one update each; {'/'.join(map(str, rounds))} rounds. Every pipelined run starts its worker inside",
        "`learn()`, as a user's does: fits run in this process until the worker is ready (a fresh interpreter that",
        "imports the package and fits a warm-up job), and the last update of each `learn()` fits in this process",
        "too (the fits column counts both). Torch runs on one thread in this process, and on one in the worker.",
        "Steps/s: median over rounds; ratios: median (and range) of the per-round ratios of steps/s.",
        "",
        "| configuration | steps per update | steps per run (updates) | pipelined (steps/s) | sequential (steps/s) "
        "| sb3-contrib (steps/s) | pipelined / sequential | pipelined / sb3-contrib | sequential / sb3-contrib "
        "| fits in the worker (lowest run) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for summary in configs.values():
        setup, rates, ratios, fits = summary["setup"], summary["implementations"], summary["ratios"], summary["fits"]
        lines.append(
            f"| {summary['title']} | {setup['n_envs']} × {setup['n_steps']} | {setup['timesteps']} ({setup['updates']}) "
            f"| {rates['pipelined']['steps_per_s']:.0f} | {rates['sequential']['steps_per_s']:.0f} "
            f"| {rates['sb3-contrib']['steps_per_s']:.0f} | {_ratio(ratios['pipelined/sequential'])} "
            f"| {_ratio(ratios['pipelined/sb3-contrib'])} | {_ratio(ratios['sequential/sb3-contrib'])} "
            f"| {fits['in_worker']} of {fits['in_worker'] + fits['in_process']}: {_percent(fits['worker_share'])} "
            f"({_percent(fits['worker_share_min'])}) |"
        )
    ready = results.get("ready_worker_peak_kib")
    lines += [
        "",
        "Memory: what one pipelined fit copies (the critic head's input features, the λ-returns, the generator state of",
        "the epochs' shuffles, and the head's weights with its optimiser's state; the largest job of the runs) beside the",
        "rollout buffer's observations and returns, and the worker process's peak RSS (`VmHWM`) at the end of a pipelined",
        "run (the largest over rounds)"
        + (f", beside a fresh worker's once it is ready, before any job: {ready / 1024:.0f} MiB." if ready else "."),
        "",
        "| configuration | rollout's observations + returns (KiB) | job: features / returns / shuffles / weights and "
        "optimiser (KiB) | job in all (KiB) | job / rollout's observations + returns | worker's peak RSS (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for summary in configs.values():
        memory = summary["memory"]
        job = memory["job_bytes"]
        parts = (
            " / ".join(_kib(job[part]) for part in ("features", "returns", "shuffles", "weights_and_optimizer"))
            if job
            else "—"
        )
        total = f"{_kib(job['total'])} | {job['total'] / memory['rollout_bytes']:.1f}×" if job else "— | —"
        peak = memory["worker_peak_kib"]
        lines.append(
            f"| {summary['title']} | {_kib(memory['rollout_bytes'])} | {parts} | {total} "
            f"| {f'{peak / 1024:.0f}' if peak else '—'} |"
        )
    return "\n".join(lines)


RENDERERS = {
    "train": train_section,
    "recurrent_train": recurrent_train_section,
    "variant": variant_section,
    "end_to_end": end_to_end_section,
    "pipelined_critic": pipelined_critic_section,
}


def section_name(record: Mapping[str, Any]) -> str:
    """
    The docs section a result file renders into.

    :param record: a result file
    """
    if record["benchmark"] == "variant":
        return f"speed_{record['results']['name']}"
    return SECTIONS[record["benchmark"]]


def render_all(results: Path) -> dict[str, str]:
    """
    Every result file under ``results``, rendered: ``{section name: Markdown}``, in the files' name order.

    :param results: the folder of result files
    :raise ValueError: for two files of one section, or a file of an unknown kind
    """
    rendered: dict[str, str] = {}
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("benchmark") not in RENDERERS:
            raise ValueError(f"{path}: not a speed result (benchmark {record.get('benchmark')!r})")
        name = section_name(record)
        if name in rendered:
            raise ValueError(f"{path}: a second result for the section {name!r}")
        rendered[name] = RENDERERS[record["benchmark"]](record)
    return rendered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files")
    parser.add_argument("--doc", type=Path, default=sections.BENCHMARKS_MD, help="the Markdown file to rewrite")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    for name, text in render_all(args.results).items():
        print(text, end="\n\n")
        if not args.no_write:
            sections.write_section(name, text, args.doc)


if __name__ == "__main__":
    main()
