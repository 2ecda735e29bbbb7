rule select:
    input:
        store="results/{model}/activations.zarr",
    output:
        masks=directory("results/{model}/masks/{selector}.zarr"),
        report="results/{model}/masks/{selector}.json",
    log:
        "logs/select/{model}/{selector}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        selector=get_selector_json,
        ratio=config["ratio"],
        filter="" if config.get("only_correct", True) else "--all-items",
    shell:
        "culture-neurons select --store {input.store} --selector {wildcards.selector}"
        " --params {params.selector} --ratio {params.ratio} {params.filter}"
        " --out {output.masks} --report {output.report} > {log} 2>&1"
