"""Starting the tune stage's processes: in-process, on one node, or across nodes.

``python -m llara.llm.train`` (and ``llara tune``) starts itself (:func:`launch_if_needed`):

- one node, one process (CPU, or one GPU): runs in-process with ``RANK=0 WORLD_SIZE=1``;
- one node, several processes (one per GPU, or ``--nproc``):
  ``python -m torch.distributed.run --standalone --nproc_per_node=G -m llara.llm.train ARGS``;
- several nodes inside a SLURM allocation (``--nnodes`` > 1, by default the allocation's node count):
  ``srun --nodes=N --ntasks-per-node=1 python -m torch.distributed.run --nnodes=N --nproc_per_node=G
  --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT --rdzv_id=JOBID -m llara.llm.train ARGS``, one
  ``torch.distributed.run`` agent per node; HOST is the allocation's first node, PORT derived from the job id;
- several nodes outside SLURM: the same ``torch.distributed.run`` for this node only (``--rdzv-endpoint``
  required); the user starts one such command on every node.

Under a launcher (``RANK`` and ``WORLD_SIZE`` in the environment) nothing is started: the process runs as the
rank it was given. :func:`launch_command` builds the command without running anything, so it can be
checked without SLURM.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping

log = logging.getLogger("llara.llm.launch")

TRAIN_MODULE = "llara.llm.train"
# rendezvous port under SLURM: RDZV_PORT_BASE + job id mod RDZV_PORT_SPAN, below Linux's ephemeral range
RDZV_PORT_BASE, RDZV_PORT_SPAN = 20000, 10000
# SLURM variables kept in the environment of the nested ``srun``: the allocation's identity and where the
# configuration is. The others describe the job step this process runs in (its tasks, CPUs, GPUs) and srun
# would read them as options of the new step (e.g. SLURM_NTASKS=1 as --ntasks=1).
_SLURM_KEEP = {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_CONF", "SLURM_CLUSTER_NAME", "SLURM_SUBMIT_DIR",
               "SLURM_SUBMIT_HOST", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"}


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the single process's MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cuda_count() -> int:
    """Visible CUDA devices; 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ---------------------------------------------------------------------------------------------
# SLURM
# ---------------------------------------------------------------------------------------------

def in_slurm(env: Mapping[str, str]) -> bool:
    """Whether ``env`` is that of a process inside a SLURM allocation."""
    return bool(env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID"))


def slurm_job_id(env: Mapping[str, str]) -> str:
    """The allocation's job id."""
    return env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or ""


def slurm_nnodes(env: Mapping[str, str]) -> int:
    """Nodes of the SLURM allocation (``SLURM_JOB_NUM_NODES``, else ``SLURM_NNODES``); 1 outside SLURM."""
    if not in_slurm(env):
        return 1
    for key in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES"):
        value = env.get(key, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def expand_nodelist(nodelist: str) -> list[str]:
    """A SLURM host list (``gpu[01-02,07],login1``) expanded as ``scontrol show hostnames`` does:
    ``[gpu01, gpu02, gpu07, login1]``; ranges keep their zero padding."""
    parts, depth, cur = [], 0, ""
    for c in nodelist.strip():
        depth += {"[": 1, "]": -1}.get(c, 0)
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    if depth:
        raise ValueError(f"SLURM_JOB_NODELIST: unbalanced brackets in {nodelist!r}")
    return [host for part in [*parts, cur] if part for host in _expand_host(part, nodelist)]


def _expand_host(name: str, nodelist: str) -> list[str]:
    m = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", name)
    if not m:
        return [name]
    head, ranges, tail = m.groups()
    out = []
    for r in ranges.split(","):
        lo, _, hi = r.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"SLURM_JOB_NODELIST: cannot read the range {r!r} of {nodelist!r}")
        out += [head + str(i).zfill(len(lo)) + t for i in range(int(lo), int(hi or lo) + 1)
                for t in _expand_host(tail, nodelist)]
    return out


def slurm_hostnames(nodelist: str) -> list[str]:
    """The hosts of ``nodelist``: ``scontrol show hostnames`` where SLURM is installed, else
    :func:`expand_nodelist`."""
    scontrol = shutil.which("scontrol")
    if scontrol:
        res = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True)
        hosts = res.stdout.split()
        if res.returncode == 0 and hosts:
            return hosts
    return expand_nodelist(nodelist)


def slurm_rdzv_endpoint(env: Mapping[str, str], hostnames: Callable[[str], list[str]] = slurm_hostnames) -> str:
    """``HOST:PORT`` of the rendezvous under SLURM: the allocation's first node, a port derived from the job id."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    hosts = hostnames(nodelist) if nodelist else []
    if not hosts:
        raise ValueError("--nnodes > 1 under SLURM: SLURM_JOB_NODELIST is not set, so the rendezvous host is "
                         "unknown; give --rdzv-endpoint HOST:PORT")
    job = slurm_job_id(env)
    port = RDZV_PORT_BASE + (int(job) % RDZV_PORT_SPAN if job.isdigit() else 0)
    return f"{hosts[0]}:{port}"


def srun_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the job step's SLURM/SRUN/SBATCH settings (kept: the allocation's id and the
    configuration path), so the nested ``srun`` gets only the options it is given."""
    return {k: v for k, v in env.items()
            if not (k.startswith(("SRUN_", "SBATCH_")) or (k.startswith("SLURM_") and k not in _SLURM_KEEP))}


# ---------------------------------------------------------------------------------------------
# options and the command
# ---------------------------------------------------------------------------------------------

def add_launch_arguments(ap: argparse.ArgumentParser) -> None:
    """``--nnodes``, ``--node-rank``, ``--rdzv-endpoint`` (``--nproc`` is the caller's)."""
    ap.add_argument("--nnodes", type=int, default=None,
                    help="nodes to train on (default: the SLURM allocation's node count, else 1); "
                         "under SLURM srun starts one launcher per node")
    ap.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                    help="rendezvous of a multi-node run: node 0's address (default under SLURM: the first "
                         "node, a port from the job id; required outside SLURM with --nnodes > 1)")
    ap.add_argument("--node-rank", type=int, default=None,
                    help="start this node only (one command per node, by hand): 0 hosts the rendezvous store")


def _check_endpoint(endpoint: str) -> None:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--rdzv-endpoint must be HOST:PORT with a port 1-65535, found {endpoint!r}")


def check_launch(nnodes: int | None, nproc: int | None, node_rank: int | None, rdzv_endpoint: str | None,
                 env: Mapping[str, str]) -> int:
    """Check the launch options before anything starts; return the node count (``nnodes`` or the SLURM
    allocation's). Raises ValueError with a one-line message naming the option."""
    n = slurm_nnodes(env) if nnodes is None else nnodes
    if n < 1:
        raise ValueError(f"--nnodes must be 1 or more, found {n}")
    if nproc is not None and nproc < 1:
        raise ValueError(f"--nproc must be 1 or more, found {nproc}")
    if node_rank is not None and not 0 <= node_rank < n:
        raise ValueError(f"--node-rank must be 0..{n - 1} (--nnodes {n}), found {node_rank}")
    if rdzv_endpoint is not None:
        _check_endpoint(rdzv_endpoint)
    allocated = env.get("SLURM_JOB_NUM_NODES", "")
    if n > 1 and node_rank is None and in_slurm(env) and allocated.isdigit() and n > int(allocated):
        raise ValueError(f"--nnodes {n}, but this SLURM allocation has {allocated} node(s) (SLURM_JOB_NUM_NODES): "
                         "ask for the nodes (resource `nodes`, sbatch --nodes) or lower --nnodes")
    if n > 1 and rdzv_endpoint is None and not in_slurm(env):
        raise ValueError(f"--nnodes {n} outside a SLURM allocation needs --rdzv-endpoint HOST:PORT "
                         "(node 0's address; start the same command on every node with its --node-rank)")
    return n


def launch_command(argv: list[str], nnodes: int, nproc: int | None, env: Mapping[str, str], *,
                   node_rank: int | None = None, rdzv_endpoint: str | None = None, n_gpu: int = 0,
                   python: str = sys.executable,
                   hostnames: Callable[[str], list[str]] = slurm_hostnames) -> list[str] | None:
    """The command that starts the training processes of this node (or, under SLURM, of every node); None
    where one process runs in-process. Pure but for ``hostnames`` (``scontrol``): nothing is started.

    ``nproc`` processes per node (default ``n_gpu``; across nodes ``SLURM_GPUS_ON_NODE`` where ``n_gpu`` is 0;
    at least 1). ``nnodes`` > 1: with ``node_rank`` or outside SLURM, ``torch.distributed.run`` for this node
    (c10d rendezvous at ``rdzv_endpoint``); inside a SLURM allocation without ``node_rank``, ``srun`` starting
    that launcher once on each of ``nnodes`` nodes.
    """
    nnodes = check_launch(nnodes, nproc, node_rank, rdzv_endpoint, env)
    per_node = nproc or max(1, n_gpu)
    train = ["-m", TRAIN_MODULE, *argv]
    if nnodes > 1 and not nproc and not n_gpu and env.get("SLURM_GPUS_ON_NODE", "").isdigit():
        per_node = max(1, int(env["SLURM_GPUS_ON_NODE"]))  # SLURM's GPU count where this process sees none
    if nnodes == 1:
        if per_node == 1:
            return None
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={per_node}", *train]
    slurm = in_slurm(env) and node_rank is None
    endpoint = rdzv_endpoint or slurm_rdzv_endpoint(env, hostnames)
    run = [python, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc_per_node={per_node}",
           "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
           f"--rdzv_id={slurm_job_id(env) if in_slurm(env) else 'llara-tune'}"]
    if node_rank is not None:
        # c10d orders the nodes itself (torch ignores --node_rank there); the rank says which node hosts the store
        run.append(f"--rdzv_conf=is_host={'true' if node_rank == 0 else 'false'}")
    if not slurm:
        return [*run, *train]
    # --overlap: the job step this runs in (Snakemake's) holds CPUs of the first node; --ntasks: not the
    # step's SLURM_NTASKS=1; --kill-on-bad-exit: one node failing ends all
    return ["srun", f"--nodes={nnodes}", f"--ntasks={nnodes}", "--ntasks-per-node=1", "--overlap",
            "--kill-on-bad-exit=1", *run, *train]


def launch_if_needed(argv: list[str], nproc: int | None, nnodes: int | None = 1, *, node_rank: int | None = None,
                     rdzv_endpoint: str | None = None) -> int | None:
    """Outside a launcher: start the training processes (:func:`launch_command`) and return their exit
    status; where one process suffices, set the single-process environment and return None (run in-process).
    Under a launcher (``RANK`` and ``WORLD_SIZE`` set): None, nothing started.

    ``nnodes`` None: the SLURM allocation's node count (1 outside SLURM); the default 1 is one node."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return None
    n_gpu = _cuda_count()
    nnodes = nnodes if nnodes is not None else slurm_nnodes(os.environ)
    if n_gpu == 0 and nnodes == 1:  # (across nodes each process decides: the other nodes may have GPUs)
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    cmd = launch_command(argv, nnodes, nproc, os.environ, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint,
                         n_gpu=n_gpu)
    if cmd is not None:
        log.info("launching: %s", " ".join(cmd))
        env = srun_env(os.environ) if cmd[0] == "srun" else None
        return subprocess.run(cmd, env=env).returncode
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"})
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    return None
