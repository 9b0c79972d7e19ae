"""Loaded by pytest where the suite is collected (``pytest conformance`` in a checkout, ``pytest --pyargs
moe_conformance`` installed), and only there: it registers the suite's plugin (``plugin.py``). A pytest hook
rather than an import of the plugin's hooks, so that the plugin is registered once when ``tests/conftest.py``
asks too."""


def pytest_addhooks(pluginmanager):
    from moe_conformance.run import plugin

    plugin.register(pluginmanager)
