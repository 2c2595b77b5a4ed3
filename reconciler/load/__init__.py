"""Loading: read a work tree or a commit, parse YAML, check schemas and references, and
build the model; every problem of a state repo is reported at once."""
