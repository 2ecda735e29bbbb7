rule stability:
    input:
        store=layout.activations("{model}"),
    output:
        summary=report(
            layout.stability("{model}", "summary.csv"),
            caption="../report/stability_table.rst",
            category="Stability",
            subcategory="{model}",
        ),
        jaccards=layout.stability("{model}", "jaccards.parquet"),
        frequency=directory(layout.stability("{model}", "frequency.zarr")),
        figure=report(
            multiext(layout.model_figure("{model}", "stability"), *layout.FIGURE_EXTS),
            caption="../report/stability.rst",
            category="Stability",
            subcategory="{model}",
        ),
    log:
        "logs/stability/{model}.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 2
    params:
        selectors=rule_args.as_json(PLAN.data_driven_selectors),
        ratio=config["ratio"],
        filter=only_correct_flag(),
        resamples=config["stability"]["resamples"],
        null_resamples=config["stability"]["null_resamples"],
        seed=config["stability"]["seed"],
        min_items=config["stability"]["min_items"],
        memory_gb=config["stability"]["memory_gb"],
        prefix=lambda wildcards: layout.model_figure(wildcards.model, "stability"),
    shell:
        "culture-neurons stability --store {input.store} --selectors {params.selectors}"
        " --ratio {params.ratio} {params.filter} --model {wildcards.model}"
        " --resamples {params.resamples} --null-resamples {params.null_resamples}"
        " --seed {params.seed} --min-items {params.min_items} --memory-gb {params.memory_gb}"
        " --summary-out {output.summary} --jaccards-out {output.jaccards}"
        " --frequency-out {output.frequency} --figure-prefix {params.prefix} > {log} 2>&1"


use rule stability as stability_at_site with:
    input:
        store=layout.activations("{model}", "{site}"),
    output:
        summary=report(
            layout.stability("{model}", "summary.csv", "{site}"),
            caption="../report/stability_table.rst",
            category="Stability",
            subcategory="{model} {site}",
        ),
        jaccards=layout.stability("{model}", "jaccards.parquet", "{site}"),
        frequency=directory(layout.stability("{model}", "frequency.zarr", "{site}")),
        figure=report(
            multiext(
                layout.stability_figure("{model}", "{site}"), *layout.FIGURE_EXTS
            ),
            caption="../report/stability.rst",
            category="Stability",
            subcategory="{model} {site}",
        ),
    log:
        "logs/stability/{model}/{site}.log",
    wildcard_constraints:
        site=one_of(PLAN.stability_sites),
    params:
        selectors=lambda wildcards: rule_args.as_json(
            PLAN.data_driven_selectors_at(wildcards.site)
        ),
        ratio=config["ratio"],
        filter=only_correct_flag(),
        resamples=config["stability"]["resamples"],
        null_resamples=config["stability"]["null_resamples"],
        seed=config["stability"]["seed"],
        min_items=config["stability"]["min_items"],
        memory_gb=config["stability"]["memory_gb"],
        prefix=lambda wildcards: layout.stability_figure(
            wildcards.model, wildcards.site
        ),
