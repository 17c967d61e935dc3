"""The benchmark harness runs every scenario end to end at a small load, so it never rots.

One ``confab bench all`` through the command line (its own ``confab up``, a
replay and a catch-up on their own backends, one cold start), then ``confab bench report``.
Only the shape of the results and the loss accounting are checked, never speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from confab.bench.catchup import fair_share
from confab.bench.main import SCENARIOS
from confab.bench.result import RUN_FIELDS, SCENARIO_FIELDS

CONFAB = str(Path(sys.executable).with_name("confab"))
SMALL = [
    "--seconds=1",
    "--warmup=0.3",
    "--rates=50,100",
    "--rooms=4",
    "--workers=4",
    "--participants=3",
    "--events=3000",
    "--starts=1",
    "--connections=200",
    "--sockets=100",
    "--channels=10",
    "--deliveries=500",
    "--send-rate=10",
    "--conversations=2",
    "--send-sockets=5",
    "--recipients=30",
    "--messages=3000",
    "--queries=3",
    "--automod-rules=20",
]
LATENCY = ("count", "p50_ms", "p90_ms", "p99_ms", "max_ms")
PROCESS = ("cpu_seconds", "cpu_us_per_unit", "cpu_share", "peak_rss_mb")


def test_every_scenario_runs_once_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results"
    bench = subprocess.run(
        [CONFAB, "bench", "all", *SMALL, f"--out={out}"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    assert "LOST" not in bench.stderr
    for scenario in SCENARIOS:
        result = json.loads((out / f"{scenario}.json").read_text())
        assert set(SCENARIO_FIELDS) <= set(result), scenario
        assert result["runs"], scenario
        assert (result["lost"], result["duplicates"]) == (0, 0), scenario
        for run in result["runs"]:
            assert set(RUN_FIELDS) <= set(run), (scenario, run["run"])
            assert set(LATENCY) == set(run["latency"]), (scenario, run["run"])
            assert run["work"] > 0 and run["sent"] > 0, (scenario, run["run"])
            assert run["received"] >= run["sent"], (scenario, run["run"])
            assert (run["lost"], run["duplicates"]) == (0, 0), (scenario, run["run"])
            for name, process in run["processes"].items():
                assert set(PROCESS) <= set(process), (scenario, name)
            assert "load generator" in run["processes"] or scenario in ("replay", "catchup")
    sweep = json.loads((out / "e2e.json").read_text())["runs"]
    assert [r["offered_per_s"] for r in sweep] == [50, 100]
    assert "scenario / run" in bench.stdout  # the summary table
    catchup = json.loads((out / "catchup.json").read_text())["runs"]
    assert [r["copies"] for r in catchup] == [1, 2]
    for run in catchup:  # every partition held, every event applied by exactly one process
        assert fair_share(run["partition_holders"], 16, run["copies"]), run["partition_holders"]
        assert run["checkpoint"] == run["stream_last_seq"]
        assert len(run["applied_per_process"]) == run["copies"]
        assert sum(run["applied_per_process"]) == run["sent"]

    report = subprocess.run(
        [CONFAB, "bench", "report", f"--out={out}"], capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr
    for plot in ("latency_over_load", "throughput_per_core", "memory_per_connection"):
        assert (out / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot


def test_a_loss_or_a_duplicate_is_counted_and_reported() -> None:
    """The loss check itself: an item missing and one counted twice are both said aloud."""
    from confab.bench.result import Tally, loud_loss

    tally = Tally()
    tally.expect(3)
    tally.arrive("a")
    tally.arrive("b")
    tally.arrive("b")
    assert tally.counts() == {"sent": 3, "received": 3, "lost": 1, "duplicates": 1}
    run = {"run": "r", "unit": "message", **tally.counts()}
    assert loud_loss({"scenario": "s", "runs": [run]})
    assert not loud_loss({"scenario": "s", "runs": [{**run, "lost": 0, "duplicates": 0}]})
