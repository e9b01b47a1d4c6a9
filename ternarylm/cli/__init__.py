"""Console scripts (click): one module per command; heavy imports happen inside command bodies."""
