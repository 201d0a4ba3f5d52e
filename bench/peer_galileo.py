"""Galileo Agent Control's `ControlEngine.process()` in process, on rule sets shaped like bench/rules.py.

Runs in its own Python >= 3.12 environment (agent-control-server cannot join this workspace's 3.11 lock):
`bench/peers.py` starts it with the interpreter named by AEGIS_BENCH_GALILEO_PYTHON and reads one JSON
document from stdout. Each control is a regex test on `input.query` scoped to one step name (eight per
"capability", as AEGIS's generated sets have eight rules per capability); the request names capability 0,
and no pattern matches, so every applicable control is evaluated (the engine's worst case short of a deny).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from agent_control_engine.core import ControlEngine
from agent_control_models.controls import ControlDefinition
from agent_control_models.evaluation import EvaluationRequest


@dataclass(frozen=True)
class _Control:
    id: int
    name: str
    control: Any


def _controls(count: int) -> list[_Control]:
    controls = []
    for i in range(count):
        definition = ControlDefinition.model_validate(
            {
                "enabled": True,
                "execution": "server",
                "scope": {"step_types": ["tool"], "step_names": [f"cap{i // 8}"], "stages": ["pre"]},
                "condition": {
                    "selector": {"path": "input.query"},
                    "evaluator": {"name": "regex", "config": {"pattern": rf"(?i)\bdrop\s+table\s+t{i}\b"}},
                },
                "action": {"decision": "deny"},
            }
        )
        controls.append(_Control(id=i + 1, name=f"control-{i}", control=definition))
    return controls


async def _measure(count: int, iterations: int) -> dict[str, Any]:
    engine = ControlEngine(_controls(count))
    request = EvaluationRequest.model_validate(
        {
            "agent_name": "bench-agent",
            "stage": "pre",
            "step": {"type": "tool", "name": "cap0", "input": {"query": "SELECT * FROM users WHERE id = 1"}},
        }
    )
    for _ in range(min(200, iterations)):
        await engine.process(request)
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        result = await engine.process(request)
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return {
        "rules": count,
        "applicable": min(8, count),
        "is_safe": result.is_safe,
        "p50_us": round(statistics.median(samples), 2),
        "p99_us": round(samples[int(len(samples) * 0.99) - 1], 2),
    }


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = [1, 100, 1000, 10000]
    out = {
        "peer": f"agent-control-server {version('agent-control-server')} (ControlEngine.process, in process)",
        "python": sys.version.split()[0],
        "results": [asyncio.run(_measure(n, 300 if quick or n >= 10000 else 2000)) for n in sizes],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
