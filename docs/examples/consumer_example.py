"""Worked example (docs/consumers.md): e-mail the site's managers a summary whenever a session is deleted.

Two ways to run it, the same handler:

    python manage.py consume_queue session-mailer --type session.delete --applied-only \
        --handler myproject.consumer_example.session_deleted

or, in a process of your own, ``run(Support)``. Either way only the deletions the processor applied are
e-mailed (``applied_only``: a consumer sees an event once it is applied, with its verdict).
"""

from __future__ import annotations

import datetime

from django.core.mail import mail_managers

from betaassi_django.publishing.queue_event import QueueEvent


def summary(event: QueueEvent) -> tuple[str, str]:
    """The e-mail's subject and body: which session, of which assistant, when, and the event's id."""
    when = datetime.datetime.fromtimestamp(event.created_at, tz=datetime.UTC)
    return (f"Session {event.session_id} deleted",
            f"Session {event.session_id} of assistant {event.assistant_id} was deleted at "
            f"{when:%Y-%m-%d %H:%M:%S} UTC.\nEvent {event.id} (de-duplicate on it: delivery is at least once).")


def session_deleted(event: QueueEvent) -> None:
    """A handler for ``consume_queue``: one e-mail per deleted session (raising makes the command retry)."""
    if event.type == "session.delete" and event.status == "applied":  # not "noop": there was no such session
        mail_managers(*summary(event))


def run(assistant_class, *, timeout: float | None = None) -> int:
    """Follow every assistant of the class; e-mail each deletion the processor applied. Returns the e-mails sent
    (``timeout``: stop after that many seconds without an event; None: run until interrupted)."""
    sent = 0
    with assistant_class.consumer("session-mailer", types=["session.delete"], applied_only=True) as consumer:
        for event in consumer.events(timeout=timeout):
            if event.status == "applied":
                session_deleted(event)
                sent += 1
    return sent
