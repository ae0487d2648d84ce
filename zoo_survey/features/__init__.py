"""Features: the forward engine (``extract``), the content-keyed cache (``cache``), and where they meet (``source``).

The package is also callable: ``zoo_survey.features(...)`` is :func:`zoo_survey.api.features` (see
:mod:`zoo_survey._callable`).
"""

from .._callable import make_callable

make_callable(__name__, "features")
