rule prepare_checkpoint:
    input:
        lambda wildcards: [
            f for f in [PLAN.model(wildcards.model)["gguf"].get("file")] if f
        ],
    output:
        checkpoint=directory(layout.checkpoint_dir("{model}")),
    log:
        "logs/prepare_checkpoint/{model}.log",
    wildcard_constraints:
        model=one_of(PLAN.gguf_model_names),
    conda:
        "../../envs/model.yaml"
    params:
        args=lambda wildcards: rule_args.prepare_checkpoint(PLAN, wildcards.model),
    shell:
        "culture-neurons prepare-checkpoint {params.args} --out {output.checkpoint} > {log} 2>&1"
