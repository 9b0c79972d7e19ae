"""What is judged: the check table (``table.py``'s ``CHECKS``, each a ``spec.py`` ``CheckSpec``), one module per
contract area (``structure``, ``routing``, ``lifecycle``, ``model``, ``properties``, ``smoke``), the instruments
that observe the original block (``instruments.py``, ``oracle.py``, ``snapshots.py``), who is to blame
(``verdicts.py``), and ``outcomes.evaluate``, the one place a check's setting comes to an outcome.

Checks see the implementation only through ``implementations.protocol``; they never import the reference.
"""
