# LLaRA as a Snakemake DAG. Main target: results/{dataset}/{seqrec}/metrics.json
import os

from snakemake.utils import validate


configfile: os.path.join(workflow.basedir, "config/config.yaml")


validate(config, "workflow/schemas/config.schema.yaml")


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
