rule prepare_data:
    input:
        sources=get_dataset_sources,
    output:
        item_table=layout.items(DATASET),
        train_table=layout.train_items(DATASET),
        report=layout.data_report(DATASET),
        report_md=layout.data_report(DATASET, ext=".md"),
    log:
        f"logs/prepare_data/{DATASET}.log",
    conda:
        "../../envs/data.yaml"
    params:
        args=lambda wildcards: rule_args.prepare_data(PLAN),
        out_dir=lambda wildcards, output: Path(output.item_table).parent,
    shell:
        "culture-neurons prepare-data {params.args} --out-dir {params.out_dir} > {log} 2>&1"


# An extra task of the attribution selectors (control, exclusion): prepare-data on the task's
# files, with the dataset's other settings and no train portion.
rule prepare_task:
    input:
        sources=get_dataset_sources,
    output:
        item_table=layout.items(DATASET, "{task}"),
        report=layout.data_report(DATASET, "{task}"),
    log:
        f"logs/prepare_task/{DATASET}/{{task}}.log",
    wildcard_constraints:
        task="control|exclusion",
    conda:
        "../../envs/data.yaml"
    params:
        args=lambda wildcards: rule_args.prepare_data(PLAN, wildcards.task),
        out_dir=lambda wildcards, output: Path(output.item_table).parent,
    shell:
        "culture-neurons prepare-task {params.args} --out-dir {params.out_dir} > {log} 2>&1"
