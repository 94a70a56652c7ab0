"""The form that starts a session from the session list page."""

from __future__ import annotations

import secrets

from django import forms

KINDS = [("default", "full history"), ("oneshot", "one-shot (last message only)"), ("manyshots", "last N messages")]


class StartSessionForm(forms.Form):
    assistant = forms.ChoiceField()
    session_id = forms.RegexField(
        regex=r"\A[A-Za-z0-9_.:-]{1,60}\Z", required=False, max_length=60,  # \Z: "$" passes a final newline
        help_text="Letters, digits, '_', '-', '.', ':'. Blank: a new random id.",
        error_messages={"invalid": "Use 1 to 60 letters, digits, '_', '-', '.' or ':'."})
    kind = forms.ChoiceField(choices=KINDS, initial="default")
    context_messages = forms.IntegerField(label="N", min_value=1, max_value=1000, required=False,
                                          help_text="Messages of context for 'last N messages'.")
    model = forms.CharField(max_length=100, required=False, help_text="Blank: the assistant's model.")

    def __init__(self, *args, assistants, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["assistant"].choices = [(a.id, a.name or a.id) for a in assistants]

    def clean(self) -> dict:
        data = super().clean()
        if data.get("kind") == "manyshots" and not data.get("context_messages"):
            self.add_error("context_messages", "Say how many messages 'last N messages' keeps.")
        if data.get("kind") != "manyshots":
            data["context_messages"] = None
        data["session_id"] = data.get("session_id") or f"chat-{secrets.token_hex(4)}"
        data["model"] = data.get("model") or None
        return data
