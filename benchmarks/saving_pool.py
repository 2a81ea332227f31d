"""Run a benchmark's jobs in worker processes, saving every finished one at once."""
from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping


def run_saving(fn: Callable[[tuple], dict], jobs: Iterable[tuple], workers: int, out: str | Path,
               tag: str, line: Callable[[dict], str], extra: Mapping[str, Any] | None = None,
               ) -> tuple[list[dict], float]:
    """``fn`` over ``jobs`` in ``workers`` processes; after each result its ``line`` is printed
    and ``out/TAG.json`` is rewritten with every result so far, the wall time and ``extra``
    (the run's settings) (an interrupted run keeps them). Returns the results and the wall
    time in seconds."""
    path = Path(out) / f"{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    t0, results = time.perf_counter(), []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for res in pool.map(fn, jobs):
            results.append(res)
            print(line(res), flush=True)
            saved = {"results": results, "wall_s": time.perf_counter() - t0, **(extra or {})}
            path.write_text(json.dumps(saved, indent=1) + "\n")
    return results, time.perf_counter() - t0
