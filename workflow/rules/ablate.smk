rule ablate:
    input:
        item_table=f"{data_dir()}/items.parquet",
        masks="results/{model}/masks/{selector}.zarr",
        model=get_model_input,
    output:
        directory("results/{model}/ablations/{selector}"),
    log:
        "logs/ablate/{model}/{selector}.log",
    conda:
        "../../envs/model.yaml"
    resources:
        gpu=get_gpus,
        mem_mb=get_mem_mb,
        batch_size=get_batch_size,
        max_batch_size=get_max_batch_size,
    params:
        model=get_model_json,
        sources=get_sources,
        max_new_tokens=get_max_new_tokens(),
    shell:
        "culture-neurons --threads {threads} ablate --items {input.item_table} --model {params.model}"
        " --masks {input.masks} --sources {params.sources}"
        " --batch-size {resources.batch_size} --max-batch-size {resources.max_batch_size}"
        " --max-new-tokens {params.max_new_tokens}"
        " --out-dir {output} > {log} 2>&1"
