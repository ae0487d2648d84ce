"""``python -m zoo_survey``: the same command line as the ``zoo-survey`` script."""

from .cli import script

script()
