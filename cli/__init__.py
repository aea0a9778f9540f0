"""`alliance`, the operator's command line: a thin layer over the domain services."""
