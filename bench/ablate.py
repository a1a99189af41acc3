"""What each part of treadle's request path costs: the same load on treadle with one part
switched off at a time, against treadle as it is and the bare SDK baseline.

    python -m bench.ablate [--scenario call|rest] [--era legacy|2026-07-28] [--concurrency 1]
                           [--rounds 6] [--block-seconds 2] [--variants no-progress,no-ledger+...]
                           [--against DIR] [--database sqlite|postgresql]

Every variant is its own `treadle serve` (`bench/patched.py` applies the patches; `+` joins
several in one variant, `all` is every patch but `no-pipeline`), all running at once. Rounds
load each server in turn for `--block-seconds` (the order rotates every round) and read the
server's CPU time (/proc) around each block. CPU per call drifts by ±20% over minutes in this
VM, so a variant's saving is the median over rounds of (treadle's CPU/call - the variant's)
measured in the same round, not a difference of two long averages.
Measurement only: a patched server breaks guarantees treadle makes (see bench/patched.py).

`--against DIR` adds the variant `against`: `treadle serve` run from another source tree
(`DIR/src/treadle`, e.g. `git archive` of an earlier commit), so a change is priced as
(treadle now - treadle then) in the same rounds; a negative "saved" is what the change saves.
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from bench.cases.replicas import fresh_database
from bench.patched import PATCHES
from bench.profile import Run, Subject, _bare_subject, _load, _measured, _treadle_subject
from bench.rawmcp import MODERN_VERSION

DEFAULT_VARIANTS = (
    "no-access-line",
    "no-access-mw",
    "no-progress",
    "no-boundary",
    "no-track",
    "no-shaped",
    "no-ledger",
    "no-resync-poll",
    "fixed-version",
    "no-pipeline",
    "all",
)
ALL = tuple(name for name in PATCHES if name != "no-pipeline")


@dataclass
class Variant:
    label: str
    subject: Subject
    runs: list[Run] = field(default_factory=list)

    def per_round(self) -> list[float]:
        return [run.cpu_ms_per_op * 1000 for run in self.runs]

    def loop_per_round(self) -> list[float]:
        return [run.loop_cpu_seconds * 1e6 / run.operations for run in self.runs if run.operations]


def _patches(label: str) -> tuple[str, ...]:
    if label == "all":
        return ALL
    return tuple(label.split("+"))


async def run(
    scenario: str,
    era: str,
    concurrency: int,
    rounds: int,
    block: float,
    labels: list[str],
    against: Path | None = None,
    database: str = "sqlite",
) -> str:
    variants: list[Variant] = []
    async with AsyncExitStack() as databases:

        async def treadle(patches: tuple[str, ...] = (), source: Path | None = None) -> Subject:
            url = None
            if database == "postgresql":  # each server on a fresh database of its own
                url = await databases.enter_async_context(fresh_database())
            return await _treadle_subject(scenario, 400, patches, source, url)

        try:
            variants.append(Variant("treadle", await treadle()))
            if against is not None:
                variants.append(Variant("against", await treadle((), against)))
            for label in labels:
                variants.append(Variant(label, await treadle(_patches(label))))
            variants.append(Variant("bare", _bare_subject(scenario, 400)))
            for variant in variants:
                await _load(variant.subject, scenario, era, 1.0, concurrency)  # warm-up
            for number in range(rounds):
                shift = number % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    variant.runs.append(
                        await _measured(variant.subject, scenario, era, block, concurrency)
                    )
        finally:
            for variant in variants:
                variant.subject.stop()
    return report(variants, scenario, era, concurrency, rounds, block)


def _describe(label: str) -> str:
    if label == "treadle":
        return "as shipped"
    if label == "bare":
        return "the bare SDK baseline"
    if label == "against":
        return "treadle from the --against source tree"
    if label == "all":
        return "every patch but no-pipeline"
    return "; ".join(PATCHES[name][1] for name in _patches(label))


def report(
    variants: list[Variant], scenario: str, era: str, concurrency: int, rounds: int, block: float
) -> str:
    base, base_loop = variants[0].per_round(), variants[0].loop_per_round()
    lines = [
        f"{scenario} {era} c{concurrency}: {rounds} rounds of {block:g} s per server",
        "saved = median over rounds of (treadle - variant) CPU µs/call in the same round",
        "",
        f"{'variant':<16} {'calls/s':>8} {'CPU µs/call':>12} {'saved':>7} {'spread':>13} "
        f"{'loop saved':>10}  what is off",
    ]
    for variant in variants:
        calls = sum(r.operations for r in variant.runs)
        seconds = sum(r.seconds for r in variant.runs)
        cpu = sum(r.cpu_seconds for r in variant.runs) * 1e6 / calls if calls else 0.0
        saved = [b - m for b, m in zip(base, variant.per_round(), strict=True)]
        loop = [b - m for b, m in zip(base_loop, variant.loop_per_round(), strict=True)]
        spread = f"{min(saved):+.0f}..{max(saved):+.0f}"
        lines.append(
            f"{variant.label:<16} {calls / seconds:8.0f} {cpu:12.0f} "
            f"{statistics.median(saved):+7.0f} {spread:>13} {statistics.median(loop):+10.0f}  "
            f"{_describe(variant.label)}"
        )
    rounds_text = ["", "CPU µs/call per round:"]
    for variant in variants:
        rounds_text.append(
            f"{variant.label:<16} " + " ".join(f"{v:6.0f}" for v in variant.per_round())
        )
    return "\n".join(lines + rounds_text)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ablate")
    parser.add_argument("--scenario", choices=["call", "rest"], default="call")
    parser.add_argument("--era", choices=["legacy", MODERN_VERSION], default="legacy")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block-seconds", type=float, default=2.0)
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help="comma separated; patches joined with + make one variant; 'all'",
    )
    parser.add_argument("--against", type=Path, help="another source tree to compare with")
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="treadle's servers on SQLite, or each on a fresh PostgreSQL database",
    )
    args = parser.parse_args()
    if args.against is not None and not (args.against / "src" / "treadle").is_dir():
        parser.error(f"{args.against} has no src/treadle")
    labels = [label for label in args.variants.split(",") if label]
    for label in labels:
        for name in _patches(label):
            if name not in PATCHES:
                parser.error(f"unknown patch {name!r}; known: {', '.join(PATCHES)}")
    text = anyio.run(
        run,
        args.scenario,
        args.era,
        args.concurrency,
        args.rounds,
        args.block_seconds,
        labels,
        args.against,
        args.database,
    )
    print(text)


if __name__ == "__main__":
    main()
