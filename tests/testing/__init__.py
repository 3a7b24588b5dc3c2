"""Tests of the simulated engine farm (nalar_plugin.testing)."""
