# Report stage (issue #5): results/report/ in the layout of the paper's Table 1 (table.md, table.csv),
# paired differences (paired.csv) and plots attached to `snakemake --report report.html`.
# Which datasets and methods it lists comes from config `report` (llara.report.workflow); every trained
# method is read over all training seeds (config seeds): mean +- sd over seeds, seeds x sets, chance level.
from llara.report import workflow as reportwf


rule report:
    input:
        lambda w: reportwf.report_inputs(config),
    output:
        table="results/report/table.md",
        csv=report("results/report/table.csv", category="Results", subcategory="Table 1"),
        paired="results/report/paired.csv",
        hr1=report("results/report/hr1_ci.png", category="Results", subcategory="HR@1 with 95% CI"),
        seeds=report("results/report/hr1_seeds.png", category="Results", subcategory="HR@1 per training seed"),
        training=report("results/report/training.png", category="Training", subcategory="loss and hybrid share"),
    params:
        entries=lambda w: reportwf.report_entries(config),
        report=config["report"],
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["seed"],
        out_dir=lambda w, output: os.path.dirname(output.table),
    log:
        "logs/report/report.log",
    conda:
        ENV
    script:
        "../scripts/report_build.py"
