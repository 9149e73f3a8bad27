"""Errors that mean "the input or the parameters are wrong", as opposed to a bug.

The CLI prints these as one line and exits with status 2; anything else is a bug and exits 1.
"""


class SaeAtlasError(Exception):
    """A problem the user can fix (bad parameters, missing data, bad input file)."""


class ParamsError(SaeAtlasError):
    """params.yaml is invalid; the message names the key path."""


class CorpusError(SaeAtlasError):
    """A text source is missing, empty, unreadable or too small for its share of the budget."""


class ModelError(SaeAtlasError):
    """The language model cannot be found or loaded, or a layer is out of range."""


class StoreError(SaeAtlasError):
    """An activation store is incomplete, corrupted or does not match its manifest."""


class OutputError(SaeAtlasError):
    """A stage computed a value it must not publish (NaN or infinity in its metrics)."""
