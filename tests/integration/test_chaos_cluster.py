"""Broker faults under load on the 3-node cluster (bench/chaos.py --cluster-dir), short.

The full run, every fault one after the other, is CI's step of its own (.ci/run). Here:
one broker fault with the guarantees held, and the control run that proves the verifier
sees a loss: the same lost disk at replication factor 1 must fail it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import chaos
from streams.devtools.cluster import Cluster

pytestmark = pytest.mark.slow


def run_chaos(
    cluster: Cluster, keep: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    code = chaos.main(
        [
            "--cluster-dir",
            str(cluster.data_dir),
            "--leads",
            "2000",
            "--leads-per-second",
            "10",
            "--businesses",
            "200",
            "--seed",
            "11",
            "--keep",
            str(keep),
            *args,
        ]
    )
    output = capsys.readouterr()
    return code, f"logs in {keep}\n{output.err}{output.out}"


@pytest.mark.timeout(420)
def test_guarantees_hold_when_the_changelog_leader_is_killed(
    faulty_cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, output = run_chaos(
        faulty_cluster,
        tmp_path / "chaos",
        capsys,
        "--faults",
        "kill_changelog_leader",
        "--settle-seconds",
        "180",
    )
    assert code == 0, output
    assert '"violations": []' in output
    assert '"replication_factor": 3' in output
    assert '"fault": "kill_changelog_leader"' in output
    assert '"longest_dial_stall_seconds"' in output


@pytest.mark.timeout(420)
def test_a_lost_disk_at_replication_factor_one_fails_the_verifier(
    faulty_cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The control run: with one copy of each partition, the killed node's lost disk
    takes leads and limiter state with it, and the verifier must say so."""
    code, output = run_chaos(
        faulty_cluster,
        tmp_path / "chaos",
        capsys,
        "--replication-factor",
        "1",
        "--faults",
        "lose_disk",
        "--settle-seconds",
        "60",
        "--delivery-timeout",
        "20",
        "--expect-violations",
    )
    assert code == 0, output
    assert "control run: the verifier saw" in output
    assert '"replication_factor": 1' in output
