"""Metadata-backed Django models of assistants, threads, messages and runs; re-exports the publish queue's tables."""

from betaassi_django.publishing.models import PublishedEvent, PublishLease, PublishState, Session

from .base import RemoteModel, RemoteQuerySet
from .entities import Assistant, BaseAssistant, BaseMessage, BaseRun, BaseThread, Message, Run, Thread
from .lookup import assistant_models, find_assistant
from .quotas import TurnWindow

__all__ = [
    "Assistant",
    "BaseAssistant",
    "BaseMessage",
    "BaseRun",
    "BaseThread",
    "Message",
    "PublishLease",
    "PublishState",
    "PublishedEvent",
    "RemoteModel",
    "RemoteQuerySet",
    "Run",
    "Session",
    "Thread",
    "TurnWindow",
    "assistant_models",
    "find_assistant",
]
