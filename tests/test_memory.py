"""keep_freed_memory: a per-process glibc setting that must change where freed memory goes, never a number."""

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, torch
from semcov_lib.memory import keep_freed_memory
from semcov_lib.models.backbones import extract_features
images = torch.randint(0, 256, (70, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
print(json.dumps({"set": keep_freed_memory(), "features": extract_features(images, workers=1).float().sum(1).flatten().tolist()}))
"""


def _probe(switch: str) -> dict:
    env = dict(os.environ, SEMCOV_KEEP_FREED_MEMORY=switch)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_switch_and_identical_features():
    off, on = _probe("0"), _probe("1")
    assert off["set"] is False  # the switch leaves the C library's defaults alone
    assert on["set"] is True  # glibc accepted both thresholds
    assert on["features"] == off["features"]  # only where freed memory goes changes: features equal to the bit
