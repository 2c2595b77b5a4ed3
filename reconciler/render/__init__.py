"""Rendering: resolved releases -> Kubernetes objects through sandboxed Jinja2 templates,
validated, sorted and written out."""
