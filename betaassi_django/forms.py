"""The form that starts a session from the session list page."""

from __future__ import annotations

import secrets

from django import forms

from betaassi_django import quotas
from betaassi_django.publishing import kinds
from betaassi_django.publishing.events import SESSION_ID

#: Who may name a new session's id: those who may see every session's id anyway (in the admin). Anyone else gets
#: a random id, so the form never answers "taken" for an id of someone else's session.
CHOOSE_ID_PERMISSION = "betaassi_django.view_session"


def random_session_id() -> str:
    return f"chat-{secrets.token_hex(8)}"


class StartSessionForm(forms.Form):
    assistant = forms.ChoiceField()
    session_id = forms.RegexField(
        regex=rf"\A{SESSION_ID.pattern}\Z", required=False, max_length=60,  # \Z: "$" passes a final newline
        help_text="Letters, digits, '_', '-', '.', ':'. Blank: a new random id.",
        error_messages={"invalid": "Use 1 to 60 letters, digits, '_', '-', '.' or ':'."})
    kind = forms.ChoiceField(choices=kinds.CHOICES, initial="default")
    context_messages = forms.IntegerField(label="N", min_value=1, max_value=kinds.MAX_CONTEXT_MESSAGES, required=False,
                                          help_text="Messages of context for 'last N messages'.")
    model = forms.ChoiceField(required=False, help_text="Blank: the assistant's model. Each assistant offers "
                                                        "the models its sessions may use.")

    def __init__(self, *args, assistants, may_choose_id: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.assistants = {a.id: a for a in assistants}
        self.fields["assistant"].choices = [(a.id, a.name or a.id) for a in assistants]
        if not may_choose_id:
            del self.fields["session_id"]
        self.fields["model"].choices = [("", "the assistant's model")] + [
            (a.name or a.id, [(m, m) for m in quotas.choosable_models(a)]) for a in assistants]

    def clean(self) -> dict:
        data = super().clean()
        data["context_messages"] = kinds.kept_context(data.get("kind"), data.get("context_messages"))
        if kinds.context_refusal(data.get("kind"), data["context_messages"]):
            self.add_error("context_messages", kinds.ASK_FOR_COUNT)
        data["session_id"] = data.get("session_id") or random_session_id()
        data["model"] = data.get("model") or None
        assistant = self.assistants.get(data.get("assistant"))
        if assistant is not None and "model" not in self.errors:
            reason = quotas.model_refusal(type(assistant), assistant.model, data["model"])
            if reason:
                self.add_error("model", forms.ValidationError(reason, code=quotas.MODEL_NOT_ALLOWED))
        return data

    def add_refusal(self, error) -> None:
        """A publisher's ValidationError on the fields this form has (the owner's quota above the form)."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for name, messages in error.error_dict.items():
            self.add_error(name if name in self.fields else None, messages)
