# One rule per stage; `<stage>_intervention` is the same stage for an intervention other than
# the headline one (zero), whose outputs live under results/{model}/interventions/.


rule ablate:
    input:
        unpack(get_ablate_input),
        shards=get_ablate_shard_markers,
    output:
        ablations=directory(layout.ablation_dir("{model}", "{selector}", HEADLINE)),
        sweeps=[
            directory(layout.sweep_dir("{model}", "{selector}", HEADLINE, ratio))
            for ratio in PLAN.other_ratios
        ],
    log:
        "logs/ablate/{model}/{selector}.log",
    conda:
        "../../envs/model.yaml"
    resources:
        gpu=get_ablate_gpus,
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        batch_size=get_batch_size,
        max_batch_size=get_max_batch_size,
    params:
        model=get_model_json,
        sources=get_sources,
        ratios=rule_args.ratios(PLAN),
        intervention=get_intervention_json,
        store=get_store_arg,
        sweep_dir=get_sweep_base,
        max_new_tokens=config["generation"]["max_new_tokens"],
        chunk_items=lambda wildcards: PLAN.model(wildcards.model)["ablate_chunk_items"],
        gather=get_ablate_gather_flag,
    shell:
        "culture-neurons --threads {threads} ablate --items {input.item_table} --model {params.model}"
        " --masks {input.masks} --sources {params.sources} --ratios {params.ratios}"
        " --intervention {params.intervention} {params.store}"
        " --batch-size {resources.batch_size} --max-batch-size {resources.max_batch_size}"
        " --max-new-tokens {params.max_new_tokens} --chunk-items {params.chunk_items}"
        " {params.gather} --out-dir {output.ablations} --sweep-dir {params.sweep_dir} > {log} 2>&1"


use rule ablate as ablate_intervention with:
    output:
        ablations=directory(
            layout.ablation_dir("{model}", "{selector}", "{intervention}")
        ),
        sweeps=[
            directory(
                layout.sweep_dir("{model}", "{selector}", "{intervention}", ratio)
            )
            for ratio in PLAN.other_ratios
        ],
    log:
        "logs/ablate/{model}/{intervention}/{selector}.log",


# One of models.<name>.ablate_shards jobs that share out an ablate job's chunks (one GPU each);
# the ablate job then only gathers them. Only planned when ablate_shards > 1.
rule ablate_shard:
    input:
        unpack(get_ablate_input),
    output:
        done=temp(
            layout.ablate_shard_done("{model}", "{selector}", HEADLINE, "{shard}")
        ),
    log:
        "logs/ablate_shard/{model}/{selector}/{shard}.log",
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../../envs/model.yaml"
    resources:
        gpu=get_gpus,
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        batch_size=get_batch_size,
        max_batch_size=get_max_batch_size,
    params:
        model=get_model_json,
        sources=get_sources,
        ratios=rule_args.ratios(PLAN),
        intervention=get_intervention_json,
        store=get_store_arg,
        max_new_tokens=config["generation"]["max_new_tokens"],
        chunk_items=lambda wildcards: PLAN.model(wildcards.model)["ablate_chunk_items"],
        shards=lambda wildcards: PLAN.ablate_shards(wildcards.model),
        out_dir=get_ablate_out_dir,
    shell:
        "culture-neurons --threads {threads} ablate-shard --items {input.item_table}"
        " --model {params.model} --masks {input.masks} --sources {params.sources}"
        " --ratios {params.ratios} --intervention {params.intervention} {params.store}"
        " --batch-size {resources.batch_size} --max-batch-size {resources.max_batch_size}"
        " --max-new-tokens {params.max_new_tokens} --chunk-items {params.chunk_items}"
        " --shard {wildcards.shard} --shards {params.shards} --done {output.done}"
        " --out-dir {params.out_dir} > {log} 2>&1"


use rule ablate_shard as ablate_shard_intervention with:
    output:
        done=temp(
            layout.ablate_shard_done(
                "{model}", "{selector}", "{intervention}", "{shard}"
            )
        ),
    log:
        "logs/ablate_shard/{model}/{intervention}/{selector}/{shard}.log",
