"""The Git trailers of the tool's commits (DESIGN §4, a contract): their names, defined once
for the writes that set them and the history that reads them."""

from __future__ import annotations

OPERATION = "Operation"
COMPONENT = "Component"
FROM_ENVIRONMENT = "From-Environment"
TO_ENVIRONMENT = "To-Environment"
ENVIRONMENT = "Environment"
IMAGE = "Image"
SOURCE_COMMIT = "Source-Commit"
RELEASE = "Release"
PIPELINE = "Pipeline"
TRACK = "Track"
VERSION = "Version"
"""The API major line a release write acts on, while its environment runs several."""
KEY = "Key"
RECIPIENTS = "Recipients"
ROLLED_BACK_FROM = "Rolled-Back-From"
VERIFICATION_SKIPPED = "Verification-Skipped"
"""Set on a promotion made with --skip-verification: the reason given."""
PULL_REQUEST_BRANCH = "Pull-Request-Branch"
"""Set on a write made for a pull request (``--branch``): kept by a rebase merge."""

INIT = "init"
"""The operation of the commit `reconciler init` makes."""
