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
    # Snakemake sets OMP_NUM_THREADS to a job's threads (1 by default), which would halve the
    # LM forward on 2 cores: give this job every core it may use.
    threads: workflow.cores
    resources:
        gpu=1,  # unconstrained locally unless --resources gpu=N is given; the SLURM executor requests it
    wildcard_constraints:
        layer=r"\d+",
    shell:
        stage_shell("activations")
