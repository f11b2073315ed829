"""Training across nodes (issue #27, item 5): the same tune as 1 node x 2 processes and as 2 "nodes" x 1 process
(two launchers on this machine, c10d rendezvous on localhost, gloo) gives the same loss curve, adapter and
projector; the srun command of a multi-node SLURM job; one-line errors for bad launch options."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llara.llm.launch import check_launch, expand_nodelist, launch_command, slurm_rdzv_endpoint, srun_env
from test_llm_train import _args, env  # noqa: F401 (env: the tiny model and data, a module-scoped fixture)

REPO = Path(__file__).resolve().parents[1]
DS2 = str(REPO / "config" / "deepspeed" / "zero2.json")
# loss curve, adapter and projector of the two layouts: same global ranks, same micro-batches per rank, a
# 2-rank gloo all-reduce either way, so they agree to float32 rounding (measured: bitwise equal)
TOL = 1e-6
# 32 samples, 1 epoch, 8 per step: 4 optimizer steps of 2 micro-batches x 2 ranks
CFG = {"dataset": "lastfm", "seed": 3, "max_train_samples": 32, "epochs": 1, "micro_batch_size": 2,
       "effective_batch_size": 8, "n_candidates": 8, "lr": 0.02, "min_lr": 0.002, "warmup_start_lr": 0.002,
       "precision": "fp32", "deepspeed_config": DS2, "checkpoint_every": 1000, "prompt_format": "raw"}
TIMING = {"tokens_per_s", "step_s"}  # wall-clock columns of the log


def _env(extra_env=None) -> dict[str, str]:
    out = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(extra_env or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        out.pop(k, None)
    for k in [k for k in out if k.startswith(("SLURM_", "SRUN_", "SBATCH_"))]:  # CI inside a SLURM job
        out.pop(k)
    return out


def _run(cmd, extra_env=None, timeout=300):
    return subprocess.run(cmd, env=_env(extra_env), capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: float(v) if v != "" else None for k, v in r.items()} for r in csv.DictReader(f)]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_nodes_train_like_one_node_with_two_processes(env):
    root = env["root"]
    one, two = root / "one_node", root / "two_nodes"
    t0 = time.perf_counter()
    res = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "llara.llm.train", *_args(env, one, root / "one_ckpt", CFG)])
    assert res.returncode == 0, res.stderr[-4000:]
    t1 = time.perf_counter()

    # two "nodes": one launcher each, started together, meeting at a c10d rendezvous on localhost
    endpoint = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, "-m", "llara.llm.train", *_args(env, two, root / "two_ckpt", CFG),
                               "--nnodes", "2", "--node-rank", str(r), "--rdzv-endpoint", endpoint],
                              env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    t2 = time.perf_counter()
    for r, (p, (_, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"node {r}:\n{err[-4000:]}"
    node0 = outs[0][1]
    assert "--nnodes=2 --nproc_per_node=1 --rdzv_backend=c10d" in node0 and f"--rdzv_endpoint={endpoint}" in node0
    assert "micro 2 x accum 2 x 2 procs" in node0 + outs[1][1]  # one world of 2 ranks over the two launchers

    a, b = _log(one / "train_log.csv"), _log(two / "train_log.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    loss_diff = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))
    print(f"\n1x2 {t1 - t0:.1f} s, 2x1 {t2 - t1:.1f} s; max |loss difference| {loss_diff:.3g}; losses "
          f"{[x['loss'] for x in a]} vs {[y['loss'] for y in b]}")
    assert loss_diff <= TOL
    for x, y in zip(a, b):
        for k in x.keys() - TIMING:
            assert (x[k] is None) == (y[k] is None), k
            if x[k] is not None:
                assert y[k] == pytest.approx(x[k], rel=TOL, abs=TOL), (k, x["step"])
    adapter = _max_diff(load_file(str(one / "adapter" / "adapter_model.safetensors")),
                        load_file(str(two / "adapter" / "adapter_model.safetensors")))
    projector = _max_diff(load_file(str(one / "projector.safetensors")), load_file(str(two / "projector.safetensors")))
    print(f"max |adapter difference| {adapter:.3g}, max |projector difference| {projector:.3g}")
    assert adapter <= TOL and projector <= TOL
    assert not (root / "one_ckpt").exists() and not (root / "two_ckpt").exists()


SLURM = {"SLURM_JOB_ID": "123456", "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "1",
         "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_GPUS_ON_NODE": "4", "SLURM_NTASKS": "1",
         "SLURM_CPUS_PER_GPU": "8", "SLURM_CONF": "/etc/slurm/slurm.conf", "SRUN_CPUS_PER_TASK": "8",
         "PATH": "/usr/bin"}


def test_srun_command_of_a_two_node_slurm_job():
    argv = ["--config-json", "{}", "--out-dir", "o"]
    nnodes = check_launch(None, None, None, None, SLURM)  # the allocation's SLURM_JOB_NUM_NODES
    assert nnodes == 2
    cmd = launch_command(argv, nnodes, None, SLURM, n_gpu=4, python="/venv/bin/python", hostnames=expand_nodelist)
    assert cmd == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--overlap", "--kill-on-bad-exit=1",
                   "/venv/bin/python", "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=4",
                   "--rdzv_backend=c10d", "--rdzv_endpoint=gpu07:23456", "--rdzv_id=123456",
                   "-m", "llara.llm.train", *argv]
    # --nproc wins over the GPU count; an explicit endpoint over the derived one
    cmd = launch_command(argv, 2, 2, SLURM, n_gpu=4, rdzv_endpoint="head:29400", hostnames=expand_nodelist)
    assert "--nproc_per_node=2" in cmd and "--rdzv_endpoint=head:29400" in cmd
    # where this process sees no GPU, SLURM's count of the node's GPUs
    assert "--nproc_per_node=4" in launch_command(argv, 2, None, SLURM, n_gpu=0, hostnames=expand_nodelist)
    # the step's task/CPU/GPU settings stay out of the nested srun's environment; the job id and conf stay in
    assert srun_env(SLURM) == {"SLURM_JOB_ID": "123456", "SLURM_CONF": "/etc/slurm/slurm.conf", "PATH": "/usr/bin"}
    # the rendezvous host is the first of scontrol's host list
    assert slurm_rdzv_endpoint(SLURM, lambda nodelist: ["first", "second"]) == "first:23456"
    assert expand_nodelist("gpu[01-02,10],login1,r[1-2]n[7-8]") == \
        ["gpu01", "gpu02", "gpu10", "login1", "r1n7", "r1n8", "r2n7", "r2n8"]


def test_launch_commands_outside_slurm_and_on_one_node():
    argv = ["--out-dir", "o"]
    # one node: as before (in-process with one process, torch.distributed.run --standalone with several)
    assert launch_command(argv, 1, None, {}) is None
    assert launch_command(argv, 1, None, {}, n_gpu=2, python="py") == \
        ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "llara.llm.train", *argv]
    # a one-node SLURM allocation: single-node behaviour
    one = {**SLURM, "SLURM_JOB_NUM_NODES": "1"}
    assert check_launch(None, None, None, None, one) == 1 and launch_command(argv, 1, None, one) is None
    # by hand, one command per node: this node's launcher only, no srun
    cmd = launch_command(argv, 2, None, {}, node_rank=1, rdzv_endpoint="10.0.0.1:29400", python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
                   "--rdzv_endpoint=10.0.0.1:29400", "--rdzv_id=llara-tune", "--rdzv_conf=is_host=false",
                   "-m", "llara.llm.train", *argv]
    # more nodes than the allocation has: refused in one line
    with pytest.raises(ValueError, match="--nnodes 3, but this SLURM allocation has 2 node"):
        check_launch(3, None, None, None, SLURM)
    # inside SLURM, --node-rank also means: this node only
    assert launch_command(argv, 2, None, SLURM, node_rank=0, hostnames=expand_nodelist)[0] != "srun"


@pytest.mark.parametrize("extra, message", [
    (["--nnodes", "0"], "llara tune: error: --nnodes must be 1 or more, found 0"),
    (["--nnodes", "2"], "llara tune: error: --nnodes 2 outside a SLURM allocation needs --rdzv-endpoint HOST:PORT"),
    (["--nnodes", "2", "--rdzv-endpoint", "node0"], "llara tune: error: --rdzv-endpoint must be HOST:PORT"),
    (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "n:1"], "llara tune: error: --node-rank must be 0..1"),
    (["--nproc", "0"], "llara tune: error: --nproc must be 1 or more, found 0"),
])
def test_bad_launch_options_fail_in_one_line(tmp_path, extra, message):
    """Checked before any input is read or process started: one line, exit status 2 (llara.cli_errors)."""
    res = _run([sys.executable, "-m", "llara.cli", "tune", "--config-json", "{}", "--base", "b", "--items", "i",
                "--train", "t", "--embeddings", "e", "--out-dir", str(tmp_path / "o"),
                "--ckpt-dir", str(tmp_path / "c"), *extra], timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr
