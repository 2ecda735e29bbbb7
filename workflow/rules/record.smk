rule baseline_and_record:
    input:
        item_table=f"{data_dir()}/items.parquet",
        data_report=f"{data_dir()}/report.json",
        model=get_model_input,
    output:
        store=directory("results/{model}/activations.zarr"),
        identification="results/{model}/baseline/identification.parquet",
        evaluation="results/{model}/baseline/evaluation.parquet",
    log:
        "logs/baseline_and_record/{model}.log",
    conda:
        "../../envs/model.yaml"
    threads: 2
    resources:
        gpu=get_gpus,
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        batch_size=get_batch_size,
        max_batch_size=get_max_batch_size,
    params:
        model=get_model_json,
        chunk_items=get_chunk_items,
        max_new_tokens=get_max_new_tokens(),
        baseline_dir=lambda wildcards, output: Path(output.evaluation).parent,
    shell:
        "culture-neurons --threads {threads} record --items {input.item_table} --data-report {input.data_report}"
        " --model-name {wildcards.model} --model {params.model}"
        " --batch-size {resources.batch_size} --max-batch-size {resources.max_batch_size}"
        " --chunk-items {params.chunk_items}"
        " --max-new-tokens {params.max_new_tokens}"
        " --store {output.store} --baseline-dir {params.baseline_dir} > {log} 2>&1"


rule attribute:
    input:
        unpack(get_attribute_input),
    output:
        store=directory("results/{model}/attribution.zarr"),
        report="results/{model}/attribution.json",
    log:
        "logs/attribute/{model}.log",
    conda:
        "../../envs/model.yaml"
    threads: 2
    resources:
        gpu=get_gpus,
        mem_mb=get_mem_mb,
        runtime=get_runtime,
    params:
        model=get_model_json,
        tasks=get_attribute_task_args,
        batch_size=attribution_setting("batch_size"),
        chunk_items=attribution_setting("chunk_items"),
    shell:
        "culture-neurons --threads {threads} attribute --items {input.item_table}"
        " --data-report {input.data_report} --model-name {wildcards.model}"
        " --model {params.model} {params.tasks} --batch-size {params.batch_size}"
        " --chunk-items {params.chunk_items} --store {output.store}"
        " --report {output.report} > {log} 2>&1"
