rule prepare_checkpoint:
    input:
        get_gguf_input,
    output:
        checkpoint=directory("results/{model}/checkpoint"),
    log:
        "logs/prepare_checkpoint/{model}.log",
    wildcard_constraints:
        model="|".join(gguf_model_names()) or "^$",
    conda:
        "../../envs/model.yaml"
    params:
        args=get_gguf_args,
    shell:
        "culture-neurons prepare-checkpoint {params.args} --out {output.checkpoint} > {log} 2>&1"
