"""The survey: plans (``plan``), options (``options``), units of work (``units``), runners (``runner``),
and the run itself (``run``)."""
