rule prepare_data:
    input:
        sources=get_prepare_data_input,
    output:
        item_table=f"{data_dir()}/items.parquet",
        train_table=f"{data_dir()}/train_items.parquet",
        report=f"{data_dir()}/report.json",
        report_md=f"{data_dir()}/report.md",
    log:
        f"logs/prepare_data/{dataset_name()}.log",
    conda:
        "../../envs/data.yaml"
    params:
        args=get_prepare_data_args,
        out_dir=lambda wildcards, output: Path(output.item_table).parent,
    shell:
        "culture-neurons prepare-data {params.args} --out-dir {params.out_dir} > {log} 2>&1"


rule prepare_task:
    input:
        sources=get_prepare_data_input,
    output:
        item_table=f"{data_dir()}/{{task}}/items.parquet",
        report=f"{data_dir()}/{{task}}/report.json",
    log:
        f"logs/prepare_task/{dataset_name()}/{{task}}.log",
    wildcard_constraints:
        task="control|exclusion",
    conda:
        "../../envs/data.yaml"
    params:
        args=get_prepare_task_args,
        out_dir=lambda wildcards, output: Path(output.item_table).parent,
    shell:
        "culture-neurons prepare-data {params.args} --out-dir {params.out_dir} > {log} 2>&1"
