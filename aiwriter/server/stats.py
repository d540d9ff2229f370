"""The scheduler's counters, shown by /api/status. The scheduler thread alone writes them."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class SchedulerStats:
    steps: int = 0            # batched forwards run
    jobs: int = 0             # jobs started
    prompt_ids: int = 0       # ids in the openings of those jobs
    reused_ids: int = 0       # of those, found in the prefix cache
    read_ids: int = 0         # of those, read by the model
    disk_ids: int = 0         # of the reused ids, found in the disk state cache
    written_chars: int = 0
    max_batch_seen: int = 0
    cache_entries: int = 0
    cache_bytes: int = 0
    paused_jobs: int = 0      # times a job was paused because its client stopped reading
    turns_given: int = 0      # times a job paused so that a job waiting for room could start
    dropped_slow: int = 0     # jobs stopped because their client did not read for too long

    def as_dict(self) -> dict:
        return asdict(self)
