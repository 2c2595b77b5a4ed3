"""Read-only views of a state repo and its history: status, history, audit, secrets,
builds, effective configuration."""
