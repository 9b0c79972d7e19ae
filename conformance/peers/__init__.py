"""Built-in adapters for the field's calibration projects, each in the model-conversion form of
``conformance.impl`` (``prepare_model``, ``calibration_mode``, ``CONTRACT_LEVELS``): ``--impl llmcompressor``
(0.12 and later: ``llmc_linearize``), ``--impl defuser`` (``defuser_convert``), ``--impl auto_round``
(``auto_round_replace``). Each drives its project exactly the way that project's own calibration flow does and
declares only what the project promises, so the suite can say "not offered" where it promises nothing.

They import their project on first use: the adapters themselves import nothing but the standard library and
torch, so the harness loads without any of the projects installed.
"""

BUILTIN = {
    "defuser": "conformance.peers.defuser_convert",
    "auto_round": "conformance.peers.auto_round_replace",
    "auto-round": "conformance.peers.auto_round_replace",
}
