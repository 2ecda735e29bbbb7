if PLAN.is_demo_dataset:

    rule make_demo:
        input:
            spec=config["dataset"]["demo"]["spec"],
        output:
            shards=PLAN.demo_shards(),
            card=f"{config['dataset']['local_dir']}/README.md",
            generation=f"{config['dataset']['local_dir']}/generation.json",
        log:
            "logs/make_demo.log",
        conda:
            "../../envs/data.yaml"
        params:
            out=lambda wildcards, output: Path(output.card).parent,
            args=lambda wildcards: rule_args.make_demo(PLAN),
        shell:
            "culture-neurons make-demo --out {params.out} {params.args} > {log} 2>&1"


rule train_demo:
    input:
        item_table=layout.items(DATASET),
        train_table=layout.train_items(DATASET),
    output:
        model=directory(layout.demo_weights("{model}")),
        report=layout.demo_model_report("{model}"),
    log:
        "logs/train_demo/{model}.log",
    wildcard_constraints:
        model=one_of(PLAN.trained_demo_model_names),
    conda:
        "../../envs/model.yaml"
    threads: 2
    params:
        settings=lambda wildcards: rule_args.as_json(
            PLAN.model(wildcards.model)["demo_training"]
        ),
        demo_data=lambda wildcards: rule_args.as_json(config["dataset"]["demo"]),
    shell:
        "culture-neurons --threads {threads} train-demo --items {input.item_table}"
        " --train-items {input.train_table} --settings {params.settings}"
        " --demo-data {params.demo_data}"
        " --out {output.model} --report {output.report} > {log} 2>&1"
