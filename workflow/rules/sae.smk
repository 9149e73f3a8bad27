# One job per (layer, dictionary size): train the SAE, then evaluate it on held-out tokens.
# Both use every core they are given (Snakemake pins OMP_NUM_THREADS to a job's threads) and
# ask for a GPU on a cluster; locally gpu is unconstrained unless --resources gpu=N is given.
rule train_sae:
    input:
        stage_inputs("train_sae"),
    output:
        stage_outputs("train_sae"),
    log:
        stage_log("train_sae"),
    conda:
        "../../environment.yml"
    params:
        tracked=stage_params("train_sae"),
    threads: workflow.cores
    resources:
        gpu=1,
    wildcard_constraints:
        layer=r"\d+",
        size=r"\d+",
    shell:
        stage_shell("train_sae")


rule evaluate:
    input:
        stage_inputs("evaluate"),
    output:
        stage_outputs("evaluate"),
    log:
        stage_log("evaluate"),
    conda:
        "../../environment.yml"
    params:
        tracked=stage_params("evaluate"),
    threads: workflow.cores
    resources:
        gpu=1,
    wildcard_constraints:
        layer=r"\d+",
        size=r"\d+",
    shell:
        stage_shell("evaluate")
