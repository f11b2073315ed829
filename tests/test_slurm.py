"""The cluster profiles: a real one-node SLURM cluster runs a small DAG through ``--profile profiles/slurm``.

The cluster (munged, MariaDB, slurmdbd, slurmctld, slurmd; accounting on, as the executor plugin polls
``sacct``) is started by ``tests/slurm/start_cluster.sh``, which installs Debian's slurm-wlm, slurmdbd,
munge and mariadb-server with apt-get when they are missing, and stopped by ``stop_cluster.sh`` at the
end whatever happens. Needs root; skipped with the reason where the machine cannot run it.

DAG: download -> preprocess of a tiny ML-100K-shaped mirror (pinned through download.extra_sha256),
then SASRec pretraining (seqrec_train) for a few epochs: three sbatch jobs. A fast test (no SLURM)
checks that both profiles parse, list the DAG, and give every rule of workflow/rules/ its requests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from test_data_parse import write_ml_zip

SLURM_DIR = Path(os.environ.get("LLARA_SLURM_DIR", "/var/lib/llara-slurm"))
ACCOUNT, PARTITION = "llara", "debug"
SCRIPTS = REPO / "tests" / "slurm"
DAG_TIMEOUT_S = 900


def _slurm_env() -> dict[str, str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return {**os.environ, "PATH": path, "SLURM_CONF": str(SLURM_DIR / "etc" / "slurm.conf"),
            "LLARA_SLURM_DIR": str(SLURM_DIR), "LLARA_SLURM_ACCOUNT": ACCOUNT, "LLARA_SLURM_PARTITION": PARTITION}


def _running() -> bool:
    """Whether a cluster started by start_cluster.sh is already up (then it is reused and left running)."""
    pids = [SLURM_DIR / "run" / "slurm" / f"{d}.pid" for d in ("slurmctld", "slurmd")]
    try:
        return all(os.kill(int(p.read_text().strip()), 0) is None for p in pids)
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def slurm_cluster():
    """Start the one-node cluster (installing the packages if needed); stop it afterwards, always."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("the SLURM test starts system daemons (munged, mariadbd, slurmdbd, slurmctld, slurmd): run it as root")
    have = shutil.which("slurmctld", path=_slurm_env()["PATH"]) is not None
    if not have and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and apt-get is not available to install slurm-wlm/slurmdbd/munge/mariadb-server")
    reuse = _running()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(SCRIPTS / "start_cluster.sh")], env=_slurm_env(), capture_output=True,
                              text=True, timeout=900)
        if proc.returncode == 3:
            pytest.skip(f"SLURM packages missing and not installable here: {proc.stderr.strip()[-500:]}")
        if proc.returncode == 4:
            pytest.skip(f"this machine has a SLURM set-up of its own: {proc.stderr.strip()[-500:]}")
        if proc.returncode != 0:
            pytest.fail(f"start_cluster.sh failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}")
        print(f"\n[slurm] cluster {'reused' if reuse else 'started'} in {time.monotonic() - t0:.1f} s")
        yield _slurm_env()
    finally:
        if not reuse:
            subprocess.run(["bash", str(SCRIPTS / "stop_cluster.sh")], env=_slurm_env(), capture_output=True,
                           text=True, timeout=180)


def _write_config(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny ML-100K mirror and a config pinning its two members; returns (config file, mirror)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    zpath = write_ml_zip(mirror / "ml-100k.zip", n_users=30, n_items=40)
    with zipfile.ZipFile(zpath) as zf:
        pins = {f"ml-100k.zip/{m}": hashlib.sha256(zf.read(m)).hexdigest() for m in ("ml-100k/u.data", "ml-100k/u.item")}
    cfg = {
        "download": {"mirror": str(mirror), "extra_sha256": pins},
        "datasets": {"movielens": {"source": "raw"}},
        "data": {"n_candidates": 10, "candidate_sets": 2},
        "seqrec": {"sasrec": {"hidden_size": 16, "batch_size": 64, "max_epochs": 2, "patience": 1}},
    }
    path = tmp_path / "slurm_test_config.yaml"
    path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    return path, mirror


def _sacct(env: dict, job_ids: list[str]) -> list[dict[str, str]]:
    fields = ["JobID", "JobName", "State", "Account", "Partition", "Comment", "ExitCode"]
    # accounting records reach slurmdbd a moment after the job ends: retry briefly until all are there
    for _ in range(40):
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", ",".join(fields)],
                             env=env, capture_output=True, text=True, timeout=30)
        rows = [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines() if line.strip()]
        if len(rows) == len(job_ids) and all(r["State"] == "COMPLETED" for r in rows):
            return rows
        time.sleep(0.5)
    return rows


def test_profiles_parse_and_cover_every_rule(tmp_path):
    """No SLURM needed: the slurm profile names every rule, and both profiles list a DAG (dry-run)."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["jobs"] >= 1
    # plain rules, rules defined under a condition (indented) and `use rule A as B` copies
    rules = {a or b for f in (REPO / "workflow/rules").glob("*.smk")
             for a, b in re.findall(r"^\s*(?:rule|checkpoint) (\w+):|^\s*use rule \w+ as (\w+)", f.read_text(), flags=re.M)}
    missing = rules - set(profile["set-resources"])
    assert not missing, f"profiles/slurm/config.yaml: no set-resources for rules {sorted(missing)}"
    for rule, res in profile["set-resources"].items():
        assert "runtime" in res and "mem_mb" in res, f"set-resources.{rule}: needs runtime and mem_mb"
        # cpus_per_task wins over cpus_per_gpu in the plugin: a GPU rule must not get it
        assert not (res.get("gpu") and "cpus_per_task" in {**profile["default-resources"], **res}), rule
    for gpu_rule in ("tune", "evaluate"):
        assert profile["set-resources"][gpu_rule]["gpu"] >= 1
    config, _ = _write_config(tmp_path)
    for name in ("slurm", "local"):
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path / name),
                               "--profile", str(REPO / "profiles" / name), "-n", "--configfile", str(config), "--",
                               "results/movielens/sasrec/seqrec/metrics.json"],
                              capture_output=True, text=True, env={**os.environ, "LLARA_MIRROR": str(tmp_path / "mirror")})
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"--profile profiles/{name} -n failed:\n{out[-4000:]}"
        for rule in ("download", "preprocess", "seqrec_train"):
            assert re.search(rf"^{rule}\s+1$", out, flags=re.M), f"{rule} missing from the {name} dry-run:\n{out[-3000:]}"
        if name == "slurm":
            assert "slurm_account=CHANGE_ME_account" in out and "cpus_per_task=2" in out


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_profile_runs_dag(slurm_cluster, tmp_path):
    env = slurm_cluster
    config, mirror = _write_config(tmp_path)
    env = {**env, "LLARA_MIRROR": str(mirror)}  # CI sets LLARA_MIRROR to shared/datasets: point it at the fixture
    work = tmp_path / "work"
    work.mkdir()
    data = [f"results/movielens/data/{s}.parquet" for s in ("items", "train", "valid", "test")]
    seqrec = [f"results/movielens/sasrec/seqrec/{f}" for f in ("model.safetensors", "item_embeddings.parquet", "metrics.json")]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
           "--profile", str(REPO / "profiles" / "slurm"),
           "--default-resources", f"slurm_account={ACCOUNT}", f"slurm_partition={PARTITION}",
           "--slurm-init-seconds-before-status-checks", "2",
           "--configfile", str(config), "--", data[-1], seqrec[-1]]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=DAG_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the DAG did not finish in {DAG_TIMEOUT_S} s on the cluster:\n{(e.stderr or '')[-6000:]}")
    wall = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    print(f"[slurm] DAG (3 sbatch jobs) ran in {wall:.1f} s")
    assert proc.returncode == 0, f"snakemake --profile profiles/slurm failed ({proc.returncode}):\n{out[-8000:]}"

    # every job went through sbatch: the plugin's submit lines name their SLURM job ids ...
    job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    assert len(job_ids) == 3, f"expected 3 sbatch submissions, found {job_ids}:\n{out[-4000:]}"
    # ... and SLURM's accounting lists them as completed, under the account and partition given
    rows = _sacct(env, job_ids)
    assert sorted(r["JobID"] for r in rows) == sorted(job_ids), f"sacct lists {rows}, expected jobs {job_ids}"
    for r in rows:
        assert r["State"] == "COMPLETED" and r["ExitCode"] == "0:0", r
        assert r["Account"] == ACCOUNT and r["Partition"] == PARTITION, r
    rules = sorted(re.match(r"rule_([A-Za-z0-9_]+?)(_wildcards_|$)", r["Comment"]).group(1) for r in rows)
    assert rules == ["download", "preprocess", "seqrec_train"], rows

    # the outputs exist and are what the stages write
    assert (work / "resources/raw/movielens/raw/ml-100k.zip").is_file()
    for rel in data + seqrec:
        assert (work / rel).is_file() and (work / rel).stat().st_size > 0, rel
    metrics = json.loads((work / seqrec[-1]).read_text())
    assert metrics, "seqrec metrics.json is empty"
