if is_demo_dataset():

    rule make_demo_data:
        input:
            spec=config["dataset"]["demo"]["spec"],
        output:
            shards=get_demo_shards(),
            card=f"{config['dataset']['local_dir']}/README.md",
            generation=f"{config['dataset']['local_dir']}/generation.json",
        log:
            "logs/make_demo_data.log",
        conda:
            "../../envs/data.yaml"
        params:
            out=lambda wildcards, output: Path(output.card).parent,
            args=get_demo_args,
        shell:
            "culture-neurons make-demo --out {params.out} {params.args} > {log} 2>&1"


rule train_demo_model:
    input:
        item_table=f"{data_dir()}/items.parquet",
        train_table=f"{data_dir()}/train_items.parquet",
    output:
        model=directory("results/{model}/demo_weights"),
        report="results/{model}/demo_model.json",
    log:
        "logs/train_demo_model/{model}.log",
    wildcard_constraints:
        model="|".join(trained_demo_model_names()) or "^$",
    conda:
        "../../envs/model.yaml"
    threads: 2
    params:
        settings=get_demo_training_json,
        demo_data=get_demo_data_json,
    shell:
        "culture-neurons --threads {threads} train-demo --items {input.item_table}"
        " --train-items {input.train_table} --settings {params.settings}"
        " --demo-data {params.demo_data}"
        " --out {output.model} --report {output.report} > {log} 2>&1"
