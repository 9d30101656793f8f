"""``make bench``: the rotation service against floors computed from the lab's own numbers, and against a naive peer.

Every scenario (``bench/scenarios.py``) runs ``BENCH_SAMPLES`` times (default 5) and reports its median, its spread
(lowest to highest) and its ratio to its floor; the fleet scenario (``BENCH_FLEET`` accounts, default 200) is also
compared with a naive sequential peer measured in the same run. The emulator runs in its own process with the
issue's latencies, ARM's real token buckets, ``Retry-After`` on its operations, one "InProgress" poll and a lingering
"Accepted". The results go to ``bench/results/latest.md`` (the table the README shows) and ``latest.png`` (a chart
of the ratios to the floors).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench import scenarios
from bench.lab import ROOT, lab
from bench.scenarios import ARM, LATENCY, Measured

RESULTS = ROOT / "bench" / "results"
RUNTIME = ROOT / ".venv" / "bench-runtime"  # only requirements.txt: what Azure installs


def runtime() -> Path:
    """A virtualenv with only the deployed requirements, compiled as a deployment's would be."""
    python = RUNTIME / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(RUNTIME)], check=True)
        # pip compiles what it installs, as a deployment's build does.
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", "requirements.txt"], cwd=ROOT, check=True)
    return RUNTIME


def row(m: Measured) -> str:
    median = statistics.median(m.samples)
    spread = f"{min(m.samples):.2f} to {max(m.samples):.2f}"
    ratio = f"{median / m.floor:.2f}x" if m.floor else ""
    floor = f"{m.floor:.2f} {m.unit}" if m.floor else ""
    calls = ", ".join(f"{k} {v:g}" for k, v in m.calls.items())
    note = "; ".join(x for x in (calls, m.note) if x)
    return f"| {m.name} | {median:.2f} {m.unit} | {spread} | {floor} | {ratio} | {m.target} | {note} |"


def chart(results: list[Measured], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rated = [m for m in results if m.floor]
    names = [m.name for m in rated]
    medians = [statistics.median(m.samples) / (m.floor or 1) for m in rated]
    low = [med - min(m.samples) / (m.floor or 1) for m, med in zip(rated, medians, strict=True)]
    high = [max(m.samples) / (m.floor or 1) - med for m, med in zip(rated, medians, strict=True)]
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.7 * len(rated)))
    ax.barh(names, medians, xerr=[low, high], color="#4c72b0", capsize=4)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.axvline(1.2, color="#c44e52", linestyle="--", linewidth=1, label="1.2x (the fleet's target)")
    ax.set_xlabel("median / floor (lowest and highest sample as whiskers)")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    samples = int(os.environ.get("BENCH_SAMPLES", "5"))
    fleet = int(os.environ.get("BENCH_FLEET", "200"))
    print(f"make bench: {samples} samples per scenario, fleet of {fleet} accounts; latencies {LATENCY}; ARM {ARM}")
    results: list[Measured] = []
    with lab() as azure:
        azure.latency(LATENCY)
        azure.arm(**ARM)
        vault_url = azure.vault("bench")
        for accounts in (3, fleet):
            print(f"  one key, {accounts} accounts ...", flush=True)
            results.append(scenarios.rotations(azure, "bench", vault_url, accounts, samples))
        print(f"  the naive peer, {fleet} accounts (once) ...", flush=True)
        naive = scenarios.naive_peer(azure, "bench", vault_url, fleet)
        ours = statistics.median(results[-1].samples)
        results[-1].note = f"naive peer {naive:.1f} s = {naive / ours:.1f}x ours"
        print("  several keys ...", flush=True)
        results.append(scenarios.several_keys(azure, "bench", vault_url, samples))
        print("  5 and 500 versions ...", flush=True)
        results.append(scenarios.versions_ratio(azure, "bench", vault_url, samples))
    print("  cold import ...", flush=True)
    results.append(scenarios.cold_import(samples, runtime()))
    print("  event ack ...", flush=True)
    results.append(scenarios.event_ack())

    table = [
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {os.cpu_count()} cores; {samples} samples each.",
        "",
        "| scenario | median | spread | floor | ratio | target | calls and notes |",
        "|---|---|---|---|---|---|---|",
        *(row(m) for m in results),
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text("\n".join(table) + "\n")
    chart(results, RESULTS / "latest.png")
    print("\n".join(table))
    print(f"\nwrote {RESULTS / 'latest.md'} and {RESULTS / 'latest.png'}")


if __name__ == "__main__":
    main()
