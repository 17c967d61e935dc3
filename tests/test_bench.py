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

import pytest

from confab.bench import webhooks
from confab.bench.catchup import fair_share
from confab.bench.main import SCENARIOS
from confab.bench.result import RUN_FIELDS, SCENARIO_FIELDS
from confab.bench.stack import local_stack

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
    "--generators=2",
    "--readers=2",
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
    # The sends came from two generator processes, each on a line of its own, and the
    # messages of both were counted (none lost above).
    for scenario in ("sends-closed", "sends-open"):
        for run in json.loads((out / f"{scenario}.json").read_text())["runs"]:
            assert {"load generator", "load generator 2"} <= set(run["processes"]), run
            assert run["processes"]["load generator 2"]["cpu_seconds"] > 0, run
            assert "from 2 processes" in run["load"], run
    # sends-closed ends with its reference: a bare append on the same NATS server.
    for run in json.loads((out / "sends-closed.json").read_text())["runs"]:
        bare = run["bare_append"]
        assert bare["appends"] > 0 and bare["client_cpu_us"] > 0 and bare["nats_cpu_us"] > 0
        assert run["stack_over_bare_append"] == pytest.approx(
            run["stack_cpu_us_per_message"] / bare["cpu_us"], rel=0.01
        )
    # The send path's bare skeleton: every append read once by each of its readers, and
    # its figure the sum of its three processes and the NATS server.
    (run,) = json.loads((out / "floor.json").read_text())["runs"]
    assert run["readers"] == 2 and "2 readers" in run["load"]  # --readers
    parts = ("floor gateway", "floor command", "floor readers", "nats")
    assert set(parts) <= set(run["processes"]), run["processes"]
    assert all(run["processes"][p]["cpu_seconds"] > 0 for p in parts), run["processes"]
    assert run["sent"] == run["received"] >= run["work"] > 0  # the warm-up's count too
    assert run["floor_cpu_us_per_message"] == pytest.approx(
        sum(run["processes"][p]["cpu_us_per_unit"] for p in parts), abs=0.5
    )
    # Webhooks: a settling run not counted, then baselines and loaded runs alternate
    # (ABBA), each loaded run drained.
    runs = json.loads((out / "webhooks.json").read_text())["runs"]
    assert [r["run"] for r in runs] == [
        "settling (not counted)",
        "no endpoints 1",
        "3 endpoints 1",
        "deliveries 1",
        "3 endpoints 2",
        "deliveries 2",
        "no endpoints 2",
    ]
    assert runs[2]["relative_to_baseline"] == webhooks.relative(runs)
    # Every delivery's signature verified by the receiver (after the sends), none failed.
    assert [r["errors"] for r in runs] == [{}] * len(runs)
    # The fanout's own loop lag over each of its runs, read from its /metrics.
    for run in json.loads((out / "fanout.json").read_text())["runs"]:
        lag = run["fanout_loop_lag_ms"]
        assert lag["samples"] > 0, run["run"]
        assert 0 < lag["p50_ms"] <= lag["p90_ms"] <= lag["p99_ms"], run["run"]
        assert set(run["tcp"]) >= {"retransmitted_segments", "retransmission_timeouts"}
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


def test_peers_ratios_are_confab_over_soketi_and_judge_the_goals() -> None:
    from confab.bench.peers import peer_targets, ratios

    def fanout(cpu: float, p99: float, per_s: float, kb: float) -> dict[str, object]:
        api = {
            "run": "api-20000",
            "fanout_cpu_us_per_delivery": cpu,
            "latency": {"p99_ms": p99},
            "delivered_per_s": per_s,
        }
        sends = {**api, "run": "sends"}  # Confab's own API: no peer, no ratio
        return {"runs": [api, sends], "idle": {"kb_per_idle_connection": kb}}

    confab = {
        "fanout": fanout(18.0, 50.0, 20_000, 15.0),
        "idle": {"runs": [{"kb_per_connection": 3.0}]},
    }
    soketi = {
        "fanout": fanout(20.0, 100.0, 20_000, 7.5),
        "idle": {"runs": [{"kb_per_connection": 2.0}]},
    }
    rows = {r["figure"]: r["ratio"] for r in ratios(confab, soketi)}
    assert rows == {
        "api-20000: CPU µs per delivery": 0.9,
        "api-20000: p99 ms": 0.5,
        "api-20000: deliveries per s": 1.0,
        "KB per subscribed socket (fanout)": 2.0,
        "KB per idle connection (idle)": 1.5,
    }
    judged = {t["what"]: (t["measured"], t["met"]) for t in peer_targets(ratios(confab, soketi))}
    assert judged == {
        "fanout CPU per delivery ÷ Soketi's": (0.9, True),
        "fanout p99 delivery latency ÷ Soketi's": (0.5, True),
        "memory per connection ÷ Soketi's": (2.0, False),  # the worse of the two
    }


def test_peers_without_soketi_installed_says_how_to_install_it(tmp_path: Path) -> None:
    bench = subprocess.run(
        [CONFAB, "bench", "peers", f"--peers-dir={tmp_path}", f"--out={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bench.returncode == 2, bench.stderr
    assert "make bench-peers" in bench.stderr
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_webhook_runs_alternate_so_drift_counts_against_both_sides() -> None:
    assert webhooks.alternating(1) == [0, 3]
    assert webhooks.alternating(3) == [0, 3, 3, 0, 0, 3]
    runs = [
        {"run": "settling (not counted)", "throughput_per_s": 1400.0},
        {"run": "no endpoints 1", "throughput_per_s": 1000.0},
        {"run": "3 endpoints 1", "throughput_per_s": 800.0},
        {"run": "deliveries 1", "throughput_per_s": 2400.0},
        {"run": "3 endpoints 2", "throughput_per_s": 700.0},
        {"run": "no endpoints 2", "throughput_per_s": 900.0},
    ]
    assert webhooks.relative(runs) == round(750 / 950, 3)
    (found,) = webhooks.targets(runs)
    assert found["met"] is False
    # Pair by pair: each run with endpoints over the run without beside it.
    assert webhooks.by_pair(runs) == [0.8, round(700 / 900, 3)]
    assert found["by_pair"] == [0.8, round(700 / 900, 3)]
    assert found["pairs_median"] == round((0.8 + round(700 / 900, 3)) / 2, 3)
    assert "by_pair" not in webhooks.targets(runs[:3])[0]  # one pair: the mean says it all


def test_a_running_stack_given_by_target_has_its_backends_measured_too(tmp_path: Path) -> None:
    # ``confab up`` records the backends' pids beside the services' (``backend_pids``);
    # a run against it with ``--target`` must read NATS's and PostgreSQL's CPU as a run
    # on a stack of its own does, under the same names.
    target = tmp_path / "stack.json"
    recorded = {"nats": 11, "postgresql": 12, "s3": 13}
    target.write_text(
        json.dumps({"pids": {"gateway": 1, "messaging": 2}, "backend_pids": recorded})
    )
    with local_stack(target) as info:
        assert info["pids"] == {
            "gateway": 1,
            "messaging": 2,
            "nats": 11,
            "postgres": 12,
            "s3": 13,
        }
    # A stack.json from before ``backend_pids`` existed still works.
    target.write_text(json.dumps({"pids": {"gateway": 1}}))
    with local_stack(target) as info:
        assert info["pids"] == {"gateway": 1}
