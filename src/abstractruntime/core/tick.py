"""The scratch state of one tick, handed explicitly to everything that works inside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

from .models import StepRecord


@dataclass
class Tick:
    """Records not yet committed, and work to do once the run's lock is released."""

    records: List[StepRecord] = field(default_factory=list)
    # Run after the commit and after the lock is released: resumes an event caused, a parent
    # woken by its child's end. (Inside the lock they could deadlock two runs that signal each
    # other.)
    after: List[Callable[[], Any]] = field(default_factory=list)
    # False when a parent ticks its child inline and handles the child's ending itself.
    notify_parent: bool = True
    # Set by `Runtime.tick_many`: the tick's commit is kept here, as (run, records), and
    # written together with the other runs' commits of the batch.
    defer: Optional[List[Tuple[Any, List[StepRecord]]]] = None
