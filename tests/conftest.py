"""Test-only helpers live in tests/ and tools/; make both importable without installing them.
Hypothesis settings shared by every property test: profiles, chosen with --hypothesis-profile
(default: "ci"; "fast" for a quick pass, "thorough" for a long hunt). RR_EXAMPLES scales "ci"."""
import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
          HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=int(os.environ.get("RR_EXAMPLES", 40)), deadline=None, database=None,
                          suppress_health_check=_QUIET)
settings.register_profile("fast", settings.get_profile("ci"), max_examples=8)
settings.register_profile("thorough", settings.get_profile("ci"), max_examples=400)
settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "tests", ROOT / "tools"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
