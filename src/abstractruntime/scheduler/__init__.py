"""Registry, timer-driven scheduler and `create_scheduled_runtime`."""

from .convenience import ScheduledRuntime, create_scheduled_runtime
from .registry import WorkflowRegistry
from .scheduler import Scheduler, SchedulerStats

__all__ = ["ScheduledRuntime", "Scheduler", "SchedulerStats", "WorkflowRegistry", "create_scheduled_runtime"]
