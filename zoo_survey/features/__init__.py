"""Features: the forward engine (``extract``), the content-keyed cache (``cache``), and where they meet (``source``)."""
