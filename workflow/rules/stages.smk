# One rule per row of the stage table (src/saeatlas/pipeline.py): the same command, inputs,
# outputs, log, params and resources that dvc.yaml is generated from. A new stage is a new row;
# nothing here changes. (Directives that Snakemake evaluates at job time, here the shell
# command, must not read the loop variable then: it would be the last stage's.)
for _name in STAGE:

    rule:
        name:
            _name
        input:
            stage_inputs(_name),
        output:
            stage_outputs(_name),
        log:
            stage_log(_name),
        conda:
            "../../environment.yml"
        params:
            tracked=stage_params(_name),
            # a function with the stage bound as a default: directives run at job time, after the loop
            command=lambda wildcards, _stage=_name: stage_command(_stage, wildcards),
        threads: stage_threads(_name)
        resources:
            **stage_resources(_name),
        wildcard_constraints:
            **stage_constraints(_name),
        shell:
            "{params.command}"
