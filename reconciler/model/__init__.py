"""The model: pure frozen dataclasses for every kind of state file, the names they give
Kubernetes objects, where each lives in a state repo, and the commit trailers. No I/O."""
