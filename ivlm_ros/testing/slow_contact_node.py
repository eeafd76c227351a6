"""The ivlm node with an artificially slow contact model, for tests and the tracking-rate bench.

    IVLM_TEST_CONTACT_DELAY_S=2.0 python -m ivlm_ros.testing.slow_contact_node --ros-args ...

Wraps ``InteractionPipeline.estimate_contacts`` so every VLM call sleeps that long first (a 13B model on a
small GPU, say), then runs the real node's ``main``. Shows that the body loop keeps publishing at camera rate
while the contact loop is slow. Test scaffolding: no product module imports it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from ivlm_core.pipeline import InteractionPipeline
from ivlm_ros.node import main
from ivlm_ros.testing.node_harness import CONTACT_DELAY_ENV


def slow_down_contacts(delay_s: float) -> None:
    """Make every ``estimate_contacts`` call take ``delay_s`` longer (sleeping, so no CPU is used)."""
    estimate_contacts = InteractionPipeline.estimate_contacts

    def slow(self: InteractionPipeline, *args: Any, **kwargs: Any) -> Any:
        time.sleep(delay_s)
        return estimate_contacts(self, *args, **kwargs)

    InteractionPipeline.estimate_contacts = slow  # type: ignore[method-assign]


if __name__ == "__main__":
    slow_down_contacts(float(os.environ.get(CONTACT_DELAY_ENV, "1.0")))
    sys.exit(main())
