"""Results: the SQLite store (``store``), statistics (``stats``), the report (``report``) and its plots (``plots``)."""
