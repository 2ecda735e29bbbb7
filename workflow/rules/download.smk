# The download step: on a cluster the compute nodes often cannot reach the Hugging Face hub, so
# each hub model and the hub dataset are fetched on the login node (localrules) into the Hugging
# Face cache the jobs read; each record names the commit that the model jobs then load.


localrules:
    download_model,
    download_dataset,


rule download_model:
    output:
        record=layout.model_download_record("{model}"),
    log:
        "logs/download/models/{model}.log",
    wildcard_constraints:
        model=one_of(PLAN.hub_model_names),
    conda:
        "../../envs/model.yaml"
    params:
        args=lambda wildcards: rule_args.download_model(PLAN, wildcards.model),
    shell:
        # The one step that must reach the hub, also when the run exports HF_HUB_OFFLINE=1 for
        # its compute jobs (docs/cluster.md, "Downloads first"); tee: the hub's progress bars show on
        # the login node's terminal and stay in the log.
        "HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 culture-neurons download-model {params.args}"
        " --out {output.record} 2>&1 | tee {log}"


rule download_dataset:
    output:
        record=layout.dataset_download_record(),
    log:
        "logs/download/dataset.log",
    conda:
        "../../envs/data.yaml"
    params:
        args=lambda wildcards: rule_args.download_dataset(PLAN),
    shell:
        "HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 culture-neurons download-dataset {params.args}"
        " --out {output.record} 2>&1 | tee {log}"
