# culture-neurons: find culture-sensitive neurons in VLMs and test them by ablation.
# The DAG and artifact formats are described in README.md ("Architecture").
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


use_cli_configfiles_only()
validate(config, "workflow/schemas/config.schema.yaml")
check_demo_models()
check_batch_sizes()
check_controls()
check_sweeps()
check_hidden_labels()


wildcard_constraints:
    model="[^/]+",
    selector="[^/]+",
    intervention="[^/]+",


include: "workflow/rules/download.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/checkpoint.smk"
include: "workflow/rules/record.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/stability.smk"
include: "workflow/rules/ablate.smk"
include: "workflow/rules/analysis.smk"


rule all:
    default_target: True
    input:
        get_final_targets(),
