"""The survey: plans (``plan``), options (``options``), units of work (``units``), runners (``runner``),
and the run itself (``run``).

The package is also callable: ``zoo_survey.survey(...)`` is :func:`zoo_survey.api.survey` (see :mod:`zoo_survey._callable`).
"""

from .._callable import make_callable

make_callable(__name__, "survey")
