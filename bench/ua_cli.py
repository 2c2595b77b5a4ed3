"""The reconciler command with a User-Agent of its own, so that the API server's audit log
tells its requests apart (the benchmarks count requests per client).

Usage: python bench/ua_cli.py USER_AGENT [reconciler arguments...]
"""

from __future__ import annotations

import sys

import kubernetes.client

if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
    print(__doc__)
    raise SystemExit(0 if len(sys.argv) > 1 else 2)
_AGENT = sys.argv.pop(1)
_init = kubernetes.client.ApiClient.__init__


def _with_agent(self: kubernetes.client.ApiClient, *args: object, **kwargs: object) -> None:
    _init(self, *args, **kwargs)
    self.user_agent = _AGENT


kubernetes.client.ApiClient.__init__ = _with_agent  # type: ignore[method-assign]

from reconciler.cli import main  # noqa: E402

sys.argv[0] = "reconciler"
main()
