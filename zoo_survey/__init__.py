"""zoo-survey: survey model zoos for transfer, single large models against ensembles of smaller ones.

Data flows one way: registry -> plan -> extract -> cache -> probes -> store -> report.
"""

__version__ = "0.1.0"
