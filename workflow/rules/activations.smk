# One job per layer in model.layers; the one stage here that profits from a GPU.
rule activations:
    input:
        stage_inputs("activations"),
    output:
        stage_outputs("activations"),
    log:
        stage_log("activations"),
    conda:
        "../../environment.yml"
    params:
        tracked=stage_params("activations"),
    resources:
        gpu=1,  # unconstrained locally unless --resources gpu=N is given; the SLURM executor requests it
    wildcard_constraints:
        layer=r"\d+",
    shell:
        stage_shell("activations")
