"""The only package that talks to the Kubernetes API, and the pure parts it decides with."""
