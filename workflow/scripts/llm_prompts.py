"""Adapter of rule prompts: one dataset's templates file (llara.llm.prompts.write_dataset_templates)."""
from llara.llm.prompts import write_dataset_templates
from llara.runlog import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
write_dataset_templates(snakemake.wildcards.dataset, snakemake.output[0], snakemake.input.templates,  # noqa: F821
                        domain=snakemake.params.domain)  # noqa: F821
