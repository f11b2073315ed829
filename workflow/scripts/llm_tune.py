"""Adapter of rules tune / tune_variant: run llara.llm.train (DeepSpeed; self-launching) with the
resolved tune settings. All output of the job (its child processes included) goes to the rule's log."""

import json
import os
import sys
from pathlib import Path

from llara.llm.train import main

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
log = Path(snakemake.log[0])  # noqa: F821
log.parent.mkdir(parents=True, exist_ok=True)
fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
sys.stdout.flush(), sys.stderr.flush()
os.dup2(fd, 1), os.dup2(fd, 2)
rc = main(["--config-json", json.dumps(dict(p.settings)), "--base", i.base, "--items", i.item_table,
           "--train", i.train, "--embeddings", i.embeddings, "--templates", i.templates,
           "--valid", i.valid,
           "--out-dir", str(Path(o.projector).parent), "--ckpt-dir", p.ckpt_dir,
           "--threads", str(snakemake.threads),  # noqa: F821
           "--nnodes", str(getattr(snakemake.resources, "nodes", 1))])  # noqa: F821 (resource `nodes`, default 1)
sys.exit(rc)
