"""The AURA sandbox: a local stand-in of AURA's Panic API for tests, benchmarks and the demo.

It follows ``shared/aura-api.md`` (paths, field names, status codes including 285) and adds
fault injection (down, 5xx, 429, slow, lost replies, stalls) and a control port::

    with AuraSandbox() as aura:
        aura.set_fault("error", status=503, count=2)
        ...  # point the gateway at aura.api_url
        aura.wait_for(lambda reqs: any(r.status == 201 for r in reqs), timeout=2)
"""

from gateway.sandbox.control import SandboxControl
from gateway.sandbox.server import AuraSandbox, run_sandbox
from gateway.sandbox.state import (
    API_PREFIX,
    FAULT_MODES,
    FIRST_CALLOUT_ID,
    HTTP_CALLOUT_CLOSED,
    Fault,
    RecordedRequest,
    SandboxSeed,
)

__all__ = [
    "API_PREFIX",
    "FAULT_MODES",
    "FIRST_CALLOUT_ID",
    "HTTP_CALLOUT_CLOSED",
    "AuraSandbox",
    "Fault",
    "RecordedRequest",
    "SandboxControl",
    "SandboxSeed",
    "run_sandbox",
]
