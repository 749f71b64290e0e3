"""Tests against third-party implementations (README.md here).

A package, unlike the other test folders, so that pytest imports this folder's
conftest.py as `interop.conftest`: without it, it would be imported as the module
`conftest` and take the place of tests/conftest.py, from which the fault and
integration tests import their helpers (`from conftest import Rig`).
"""
