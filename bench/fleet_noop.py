"""The site's no-op re-run on 1, 4 and 8 testbed hosts, and where its time goes.

    python bench/fleet_noop.py [--hosts 1 4 8] [--rounds 5] [--compare-no-wait]
                               [--baseline CHECKOUT] [--wait-minutes 30]

Boots max(--hosts) testbed hosts and converges `pyinfra inventories/testbed.py deploy/site.py`
on all of them once (untimed). What the hosts run is the site on hosts that serve no model:
tb1 the primary registry and Prometheus with Alertmanager (Grafana off: its repository is
out of reach here), tb2 the registry's disaster-recovery copy, every host the base role
(APT sources, proxy, NTP, SSH, the firewall) and the exporters. Then, in rounds, the same
command limited to the first 1, 4 and 8 hosts (tb1 in every set: it has the most work),
the order of the sizes rotated each round. Every timed run must change nothing. Each run's
time is split by pyinfra's own progress lines: start (Python, imports, config and
inventory), connect (SSH to every host), prepare (the deploy code per host, facts gathered
over SSH) and execute (the operations, none of which changes anything); cpu is the CPU time
the pyinfra process used (user and system). Medians over the
rounds, and each size's total over one host's. With --compare-no-wait every size is also run
with pyinfra's --no-wait, side by side: by default pyinfra runs each operation on every host
and waits for the slowest before the next one. With --baseline every size is also run from
CHECKOUT, another checkout of this repository (``git worktree add /tmp/before <commit>``),
in the same rounds: before and after a change, side by side on the same hosts. Both must
converge the hosts to the same state (the testbed's secrets are shared), so every run of
either still changes nothing. Waits while another run holds the testbed,
and takes it down at the end. Needs root.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._testbed import on_testbed  # noqa: E402
from llmhost import converge  # noqa: E402
from llmhost.testing.testbed import Testbed  # noqa: E402

INVENTORY = "inventories/testbed.py"
# pyinfra's progress lines, in the order they come, and the phase each one ends.
MARKS = (
    ("--> Connecting to hosts...", "start"),
    ("--> Preparing operation files...", "connect"),
    ("--> Beginning operation run...", "prepare"),
    ("--> Results:", "execute"),
)
PHASES = ("start", "connect", "prepare", "execute", "total", "cpu")


def timed_noop(
    names: list[str], extra: tuple[str, ...] = (), checkout: Path = REPO
) -> dict[str, float]:
    """One site run from ``checkout`` limited to ``names``: each phase's seconds; it must
    change nothing."""
    argv = [*converge.pyinfra_argv(INVENTORY, limit=tuple(names), json_output=True), *extra]
    used = children_cpu_s()
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=checkout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None and process.stdout is not None
    seen: dict[str, float] = {}
    stderr = []
    for line in process.stderr:
        stderr.append(line)
        for mark, phase in MARKS:
            if mark in line and phase not in seen:
                seen[phase] = time.perf_counter()
    stdout = process.stdout.read()
    returncode = process.wait()
    end = time.perf_counter()
    result = converge.RunResult(returncode, stdout, "".join(stderr), converge.parse_report(stdout))
    if returncode != 0 or result.errors or result.changes:
        raise SystemExit(
            f"the re-run from {checkout} on {len(names)} host(s) failed or changed something:\n"
            f"{result.summary()}\n{result.stderr[-3000:]}"
        )
    marks = [start] + [seen[phase] for _, phase in MARKS]
    times = {phase: marks[i + 1] - marks[i] for i, (_, phase) in enumerate(MARKS)}
    return {**times, "total": end - start, "cpu": children_cpu_s() - used}


def children_cpu_s() -> float:
    """User and system CPU seconds of this process's finished children (pyinfra's runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# hosts, pyinfra's extra arguments, and the checkout it runs from (None: this one)
Variant = tuple[int, tuple[str, ...], "Path | None"]


def label(variant: Variant) -> str:
    size, extra, checkout = variant
    return " ".join([f"{size} host(s)", *extra, *([f"[{checkout}]"] if checkout else [])])


def run_rounds(names: list[str], variants: list[Variant], rounds: int) -> dict[Variant, list[dict]]:
    runs: dict[Variant, list[dict]] = {variant: [] for variant in variants}
    for number in range(1, rounds + 1):
        shift = (number - 1) % len(variants)
        order = variants[shift:] + variants[:shift]
        line = []
        for variant in order:
            size, extra, checkout = variant
            times = timed_noop(names[:size], extra, checkout or REPO)
            runs[variant].append(times)
            line.append(
                f"{label(variant)} {times['total']:.1f} s ("
                + ", ".join(f"{phase} {times[phase]:.1f}" for phase in PHASES[:4])
                + f"; CPU {times['cpu']:.1f} s"
                + ")"
            )
        print(f"  round {number}: " + "; ".join(line), flush=True)
    return runs


def summarise(runs: dict[Variant, list[dict]]) -> str:
    """Each variant's median phases, its total over the smallest size's with the same
    arguments and checkout, and (with a baseline) this checkout's total over the baseline's
    at the same size and arguments."""
    width = max(len(label(variant)) for variant in runs)
    header = "  ".join(f"{phase:>8}" for phase in PHASES)
    baselines = any(variant[2] for variant in runs)
    lines = [f"  {'medians (s)':<{width}}  {header}  vs 1 host" + ("  vs baseline" * baselines)]

    def total(variant: Variant) -> float:
        return statistics.median(times["total"] for times in runs[variant])

    for variant in sorted(runs, key=lambda v: (str(v[2] or ""), v[1], v[0])):
        checkout = variant[2]
        smallest = min((v for v in runs if v[1:] == variant[1:]), key=lambda v: v[0])
        medians = [statistics.median(times[phase] for times in runs[variant]) for phase in PHASES]
        line = f"  {label(variant):<{width}}  " + "  ".join(f"{m:8.2f}" for m in medians)
        line += f"  {total(variant) / total(smallest):7.2f}x"
        baseline = next((v for v in runs if v[:2] == variant[:2] and v[2]), None)
        if baselines and checkout is None and baseline:
            line += f"  {total(variant) / total(baseline):10.2f}x"
        lines.append(line)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--wait-minutes", type=float, default=30)
    parser.add_argument(
        "--compare-no-wait",
        action="store_true",
        help="also run every size with pyinfra's --no-wait (each host through its operations "
        "without waiting for the others at each one)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also run every size from CHECKOUT, another checkout of this repository "
        "(e.g. `git worktree add /tmp/before HEAD~1`), in the same rounds",
    )
    args = parser.parse_args()
    if args.baseline and not (args.baseline / "deploy" / "site.py").is_file():
        parser.error(f"--baseline {args.baseline}: no deploy/site.py there (not a checkout)")
    sizes = sorted(set(args.hosts))
    extras: list[tuple[str, ...]] = [(), *([("--no-wait",)] if args.compare_no_wait else [])]
    checkouts: list[Path | None] = [None, *([args.baseline.resolve()] if args.baseline else [])]
    variants: list[Variant] = [
        (size, extra, checkout) for checkout in checkouts for extra in extras for size in sizes
    ]

    return on_testbed(args.wait_minutes, lambda testbed: fleet_noop(testbed, variants, args.rounds))


def fleet_noop(testbed: Testbed, variants: list[Variant], rounds: int) -> int:
    hosts = testbed.up(max(size for size, _, _ in variants))
    first = converge.run(INVENTORY)
    if first.returncode != 0 or first.errors:
        print(first.stderr[-3000:], file=sys.stderr)
        return 2
    names = [host.name for host in hosts]
    for checkout in {checkout or REPO for _, _, checkout in variants}:
        timed_noop(names, checkout=checkout)  # untimed: settles what the first run started
    print(f"site no-op re-runs, {rounds} rounds: {', '.join(map(label, variants))}", flush=True)
    print(summarise(run_rounds(names, variants, rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
