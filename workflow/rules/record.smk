rule record:
    input:
        item_table=layout.items(DATASET),
        data_report=layout.data_report(DATASET),
        model=get_model_input,
    output:
        store=directory(layout.activations("{model}")),
        identification=layout.baseline("{model}", "identification"),
        evaluation=layout.baseline("{model}", "evaluation"),
    log:
        "logs/record/{model}.log",
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
        # From the configured batch size, so that a retry with a smaller batch resumes.
        chunk_items=lambda wildcards: PLAN.chunk_items(wildcards.model),
        max_new_tokens=config["generation"]["max_new_tokens"],
        baseline_dir=lambda wildcards: layout.baseline_dir(wildcards.model),
    shell:
        "culture-neurons --threads {threads} record --items {input.item_table} --data-report {input.data_report}"
        " --model-name {wildcards.model} --model {params.model}"
        " --batch-size {resources.batch_size} --max-batch-size {resources.max_batch_size}"
        " --chunk-items {params.chunk_items}"
        " --max-new-tokens {params.max_new_tokens}"
        " --store {output.store} --baseline-dir {params.baseline_dir} > {log} 2>&1"


# A site other than the decoder MLP (docs/sites.md): its own store, from prompt forwards only;
# the answers and their correctness are the identification baseline's.
rule record_site:
    input:
        item_table=layout.items(DATASET),
        data_report=layout.data_report(DATASET),
        baseline=layout.baseline("{model}", "identification"),
        model=get_model_input,
    output:
        store=directory(layout.activations("{model}", "{site}")),
        report=layout.site_report("{model}", "{site}"),
    log:
        "logs/record_site/{model}/{site}.log",
    wildcard_constraints:
        site=one_of(PLAN.extra_sites),
    conda:
        "../../envs/model.yaml"
    threads: 2
    resources:
        gpu=get_gpus,
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        batch_size=get_batch_size,
    params:
        model=get_model_json,
        chunk_items=lambda wildcards: PLAN.chunk_items(wildcards.model),
    shell:
        "culture-neurons --threads {threads} record-site --items {input.item_table}"
        " --data-report {input.data_report} --baseline {input.baseline}"
        " --model-name {wildcards.model} --model {params.model} --site {wildcards.site}"
        " --batch-size {resources.batch_size} --chunk-items {params.chunk_items}"
        " --store {output.store} --report {output.report} > {log} 2>&1"
