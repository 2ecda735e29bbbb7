rule select:
    input:
        store="results/{model}/activations.zarr",
    output:
        masks=directory("results/{model}/masks/{selector}.zarr"),
        report="results/{model}/masks/{selector}.json",
    log:
        "logs/select/{model}/{selector}.log",
    conda:
        "../../envs/culture-neurons.yaml"
    params:
        selector=get_selector_json,
        ratio=config["ratio"],
        filter="" if config.get("only_correct", True) else "--all-items",
    shell:
        "culture-neurons select --store {input.store} --selector {wildcards.selector}"
        " --params {params.selector} --ratio {params.ratio} {params.filter}"
        " --out {output.masks} --report {output.report} > {log} 2>&1"


rule ablate:
    input:
        item_table=f"{data_dir()}/items.parquet",
        masks="results/{model}/masks/{selector}.zarr",
        model=get_model_input,
    output:
        "results/{model}/ablations/{selector}/{source}.parquet",
    log:
        "logs/ablate/{model}/{selector}/{source}.log",
    conda:
        "../../envs/culture-neurons.yaml"
    resources:
        gpu=get_gpus,
    params:
        model=get_model_json,
        batch_size=get_batch_size,
        max_new_tokens=get_max_new_tokens(),
        out_dir=lambda wildcards, output: Path(output[0]).parent,
    shell:
        "culture-neurons --threads {threads} ablate --items {input.item_table} --model {params.model}"
        " --masks {input.masks} --sources {wildcards.source}"
        " --batch-size {params.batch_size} --max-new-tokens {params.max_new_tokens}"
        " --out-dir {params.out_dir} > {log} 2>&1"
