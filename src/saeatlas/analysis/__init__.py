"""Analyses of the trained dictionaries, one folder each (splitting, scaling, neighbours,
crystals, lobes, galaxy), every folder of one shape:

- ``config.py``: a frozen dataclass, the only home of the section's defaults and bounds (the
  params schema section is generated from it);
- ``compute.py`` (and helpers beside it): ``run(config, inputs) -> AnalysisOutput`` on plain
  arrays, returning plain data, so it is tested on planted truth without files;
- ``figures.py``: its figures; ``section.py``: what the report shows of it;
- ``stage.py``: the adapter the CLI, Snakemake and DVC call (load, compute, write, log).

What they share is in ``common/``; no analysis imports another.
"""
