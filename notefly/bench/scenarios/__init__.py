"""The scenarios of issue #8, one module each, run in this order."""
