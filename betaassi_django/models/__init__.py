"""Metadata-backed Django models of assistants, threads, messages and runs."""

from .base import RemoteModel, RemoteQuerySet
from .entities import Assistant, BaseAssistant, BaseMessage, BaseRun, BaseThread, Message, Run, Thread
from .publishing import PublishLease

__all__ = [
    "Assistant",
    "BaseAssistant",
    "BaseMessage",
    "BaseRun",
    "BaseThread",
    "Message",
    "PublishLease",
    "RemoteModel",
    "RemoteQuerySet",
    "Run",
    "Thread",
]
