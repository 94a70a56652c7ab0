"""Metadata-backed Django models of assistants, threads, messages and runs."""

from .base import RemoteModel, RemoteQuerySet
from .entities import Assistant, BaseAssistant, BaseMessage, BaseRun, BaseThread, Message, Run, Thread

__all__ = [
    "Assistant",
    "BaseAssistant",
    "BaseMessage",
    "BaseRun",
    "BaseThread",
    "Message",
    "RemoteModel",
    "RemoteQuerySet",
    "Run",
    "Thread",
]
