"""Adapter of rule base_llm: build resources/llm/{name}/ from the llm config slice (llara.llm.base)."""

import json

from llara.llm.base import main

main(["--config-json", json.dumps(dict(snakemake.params.llm)), "--out", snakemake.output[0],  # noqa: F821
      "--download-dir", snakemake.params.download_dir, "--log", snakemake.log[0]])  # noqa: F821
