"""Git through pygit2: read a commit's tree, commit with trailers, fetch and push with
retries, walk history. Nothing here knows about the state repo's kinds."""
