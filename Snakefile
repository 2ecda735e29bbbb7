# culture-neurons: find culture-sensitive neurons in VLMs and test them by ablation.
# One rule per stage, named as its `culture-neurons` subcommand; one rule file per stage family.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/checkpoint.smk"
include: "workflow/rules/record.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/stability.smk"
include: "workflow/rules/ablate.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/atlas.smk"


rule all:
    default_target: True
    input:
        PLAN.final_targets(),
