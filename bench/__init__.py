"""Fleet-scale benchmarks of the integration (`scripts/bench`); not part of the tests."""
