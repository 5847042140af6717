# segbench: "Fully Convolutional Networks for Semantic Segmentation", raw data to paper tables.
# Table of contents; every rule calls one `segbench` subcommand. See README.md and config/README.md.

configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    run="|".join(RUNS),
    seed=r"\d+",
    backbone="|".join(models.BACKBONES),


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/trace.smk"
include: "workflow/rules/volumetric.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
