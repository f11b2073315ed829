# LLaRA as a Snakemake DAG. Main target: results/{dataset}/{seqrec}/metrics.json
import os

from snakemake.io import is_flagged

from llara.owned_folders import check_folder_outputs
from llara.settings import validate_config


configfile: os.path.join(workflow.basedir, "config/config.yaml")


# The one validation of every entry point (llara.settings): workflow/schemas/config.schema.yaml with its
# defaults, plus the cross-key rules; it runs before any job, so a bad value never touches an output.
validate_config(config)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/seqrec.smk"
include: "workflow/rules/llm.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# Snakemake deletes a directory() output whole before it reruns its job, before any project code runs:
# refuse to run while such a folder holds a file the project did not write (llara.owned_folders).
check_folder_outputs([(r.name, str(f)) for r in workflow.rules for f in r.output if is_flagged(f, "directory")])


rule all:
    default_target: True
    input:
        "results/lastfm/sasrec/metrics.json",


# After a failed run: which logs to read, and the flags an interrupted run needs (docs/guarantees.md).
onerror:
    import sys

    from llara.runlog import failed_run_note

    print(failed_run_note(log), file=sys.stderr)
