"""The pytest side of the suite: the entry point's options (``options.py``), the plugin (``plugin.py``: the run's
configuration, the implementation, the header, the account at the end), fault isolation (``isolation.py``), the
results file (``results.py``), the end-of-run account (``terminal.py``) and short failure reports
(``reporting.py``).
"""
