# The attribution selectors (attr, attr_general; CULNIG, "Neuron-Level Analysis of Cultural
# Understanding in Large Language Models"): their store, and the control task's measure of the
# culture-independent masks.


rule attribute:
    input:
        unpack(get_attribute_input),
    output:
        store=directory(layout.attribution_store("{model}")),
        report=layout.attribution_report("{model}"),
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
        tasks=lambda wildcards, input: rule_args.attribute_tasks(input),
        batch_size=config["attribution"]["batch_size"],
        chunk_items=config["attribution"]["chunk_items"],
    shell:
        "culture-neurons --threads {threads} attribute --items {input.item_table}"
        " --data-report {input.data_report} --model-name {wildcards.model}"
        " --model {params.model} {params.tasks} --batch-size {params.batch_size}"
        " --chunk-items {params.chunk_items} --store {output.store}"
        " --report {output.report} > {log} 2>&1"


rule control_effect:
    input:
        unpack(get_control_effect_input),
    output:
        table=layout.control_effect("{model}"),
        report=report(
            layout.control_effect("{model}", ".md"),
            caption="../report/control_effect.rst",
            category="Attribution selectors",
            subcategory="{model}",
        ),
    log:
        "logs/control_effect/{model}.log",
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
        args=lambda wildcards, input: rule_args.control_effect(
            PLAN, input.masks, input.ablations
        ),
        max_new_tokens=config["generation"]["max_new_tokens"],
        n_boot=config["bootstrap"]["n"],
        seed=config["bootstrap"]["seed"],
    shell:
        "culture-neurons --threads {threads} control-effect"
        " --control-items {input.control_items} --model {params.model} {params.args}"
        " --baseline {input.baseline} --batch-size {resources.batch_size}"
        " --max-batch-size {resources.max_batch_size}"
        " --max-new-tokens {params.max_new_tokens} --n-boot {params.n_boot}"
        " --seed {params.seed} --out {output.table} --report {output.report} > {log} 2>&1"
