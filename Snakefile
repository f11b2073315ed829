# LLaRA as a Snakemake DAG. Main target: results/{dataset}/{seqrec}/metrics.json
import os

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


rule all:
    default_target: True
    input:
        "results/lastfm/sasrec/metrics.json",
