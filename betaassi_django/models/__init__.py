"""Metadata-backed Django models of assistants, threads, messages and runs.

Re-exports the tables users import from here: the publish queue's and the quotas' turn counter.
"""

from betaassi_django.publishing.models import (
    ConsumerFailure,
    ConsumerLease,
    PublishedEvent,
    PublishLease,
    PublishState,
    Session,
)
from betaassi_django.quotas import TurnWindow

from .assistants import BaseAssistant
from .base import RemoteModel, RemoteQuerySet
from .entities import Assistant, BaseMessage, BaseRun, BaseThread, Message, Run, Thread
from .lookup import all_assistants, assistant_models, find_assistant
from .streams import StreamThread

__all__ = [
    "Assistant",
    "BaseAssistant",
    "BaseMessage",
    "BaseRun",
    "BaseThread",
    "ConsumerFailure",
    "ConsumerLease",
    "Message",
    "PublishLease",
    "PublishState",
    "PublishedEvent",
    "RemoteModel",
    "RemoteQuerySet",
    "Run",
    "Session",
    "StreamThread",
    "Thread",
    "TurnWindow",
    "all_assistants",
    "assistant_models",
    "find_assistant",
]
