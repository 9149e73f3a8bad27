"""Analyses of the trained dictionaries (splitting, scaling, geometry).

One contract for all of them (see ``output.py``): a frozen config built from params.yaml, a
``run(config, inputs) -> AnalysisOutput`` that takes plain arrays and returns plain data (so it
is tested on planted truth without files), and one shared writer for what it returns.
"""
