rule stability:
    input:
        store="results/{model}/activations.zarr",
    output:
        summary=report(
            "results/{model}/stability/summary.csv",
            caption="../report/stability_table.rst",
            category="Stability",
            subcategory="{model}",
        ),
        jaccards="results/{model}/stability/jaccards.parquet",
        frequency=directory("results/{model}/stability/frequency.zarr"),
        figure=report(
            multiext("results/figures/{model}/stability", ".png", ".pdf"),
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
        selectors=get_stability_selectors_json,
        ratio=config["ratio"],
        filter="" if config.get("only_correct", True) else "--all-items",
        resamples=get_stability("resamples"),
        null_resamples=get_stability("null_resamples"),
        seed=get_stability("seed"),
        min_items=get_stability("min_items"),
        memory_gb=get_stability("memory_gb"),
        prefix=lambda wildcards, output: output.figure[0].removesuffix(".png"),
    shell:
        "culture-neurons stability --store {input.store} --selectors {params.selectors}"
        " --ratio {params.ratio} {params.filter} --model {wildcards.model}"
        " --resamples {params.resamples} --null-resamples {params.null_resamples}"
        " --seed {params.seed} --min-items {params.min_items} --memory-gb {params.memory_gb}"
        " --summary-out {output.summary} --jaccards-out {output.jaccards}"
        " --frequency-out {output.frequency} --figure-prefix {params.prefix} > {log} 2>&1"
