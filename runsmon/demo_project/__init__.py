"""The demo's sample project: ``train.py``, which ``runsmon demo`` runs the way Guild runs a script.

It ships inside the package, so that the demo works from an installed
runsmon as well as from a source checkout.
"""
