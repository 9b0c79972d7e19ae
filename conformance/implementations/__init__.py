"""The implementation under test, seen by every check through one protocol (``protocol.py``): the loader
(``loader.py``, the only module that names the reference), the registry kind (``registry.py``), the model
conversion kind (``conversion.py``) and the peers' adapters (``peers/``, each declaring itself).
"""
