"""The session forms of the pages: start a session, and change one's own session's kind, N and model.

Both check kind, N and model with the rules the admin and the processor apply (``publishing.kinds``,
``quotas``): ``SessionSettingsForm`` is their one home on the pages.
"""

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


def check_settings(form: forms.BaseForm, data: dict, assistant=None) -> dict:
    """kind, N and model as every session form checks them (the admin's ``SessionForm`` too): N is kept only
    for 'last N messages' and required there; the model must be on the assistant's allow-list. Errors go on
    the fields; returns ``data`` with N and model normalised."""
    data["context_messages"] = kinds.kept_context(data.get("kind"), data.get("context_messages"))
    if "context_messages" not in form.errors and kinds.context_refusal(data.get("kind"), data["context_messages"]):
        form.add_error("context_messages", kinds.ASK_FOR_COUNT)
    data["model"] = data.get("model") or None
    if assistant is not None and "model" not in form.errors:
        reason = quotas.model_refusal(type(assistant), assistant.model, data["model"])
        if reason:
            form.add_error("model", forms.ValidationError(reason, code=quotas.MODEL_NOT_ALLOWED))
    return data


def settings_of(data: dict) -> dict:
    """kind, N and model of a session form's cleaned data, as ``assistant.sessions.create`` / ``update`` take them."""
    return {"kind": data["kind"], "context_messages": data.get("context_messages"), "model": data.get("model")}


class SessionSettingsForm(forms.Form):
    """A session's kind, N and model; the subclass names the assistant (``assistant_for``) and the models."""

    kind = forms.ChoiceField(choices=kinds.CHOICES, initial="default")
    context_messages = forms.IntegerField(label="N", min_value=1, max_value=kinds.MAX_CONTEXT_MESSAGES, required=False,
                                          help_text="Messages of context for 'last N messages'.")
    model = forms.ChoiceField(required=False, help_text="Blank: the assistant's model. Each assistant offers "
                                                        "the models its sessions may use.")

    def assistant_for(self, data: dict):
        raise NotImplementedError

    def clean(self) -> dict:
        data = super().clean()
        return check_settings(self, data, self.assistant_for(data))

    def add_refusal(self, error) -> None:
        """A publisher's ValidationError on the fields this form has (the owner's quota above the form)."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for name, messages in error.error_dict.items():
            self.add_error(name if name in self.fields else None, messages)


class StartSessionForm(SessionSettingsForm):
    assistant = forms.ChoiceField()
    session_id = forms.RegexField(
        regex=rf"\A{SESSION_ID.pattern}\Z", required=False, max_length=60,  # \Z: "$" passes a final newline
        help_text="Letters, digits, '_', '-', '.', ':'. Blank: a new random id.",
        error_messages={"invalid": "Use 1 to 60 letters, digits, '_', '-', '.' or ':'."})
    field_order = ["assistant", "session_id", "kind", "context_messages", "model"]

    def __init__(self, *args, assistants, may_choose_id: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.assistants = {a.id: a for a in assistants}
        self.fields["assistant"].choices = [(a.id, a.name or a.id) for a in assistants]
        if not may_choose_id:
            del self.fields["session_id"]
        self.fields["model"].choices = [("", "the assistant's model")] + [
            (a.name or a.id, [(m, m) for m in quotas.choosable_models(a)]) for a in assistants]

    def assistant_for(self, data: dict):
        return self.assistants.get(data.get("assistant"))

    def clean(self) -> dict:
        data = super().clean()
        data["session_id"] = data.get("session_id") or random_session_id()
        return data


class EditSessionForm(SessionSettingsForm):
    """One's own session's kind, N and model (its id, owner and assistant stay), as ``sessions.update`` takes
    them."""

    def __init__(self, *args, session, assistant, **kwargs) -> None:
        kwargs.setdefault("initial", {"kind": session.kind, "context_messages": session.context_messages,
                                      "model": session.model or ""})
        super().__init__(*args, **kwargs)
        self.session, self.assistant = session, assistant
        models = quotas.choosable_models(assistant)
        if session.model and session.model not in models and not quotas.model_refusal(
                type(assistant), assistant.model, session.model):
            models.append(session.model)  # allowed by a pattern: a form cannot list those, but may keep it
        self.fields["model"].choices = [("", f"the assistant's model ({assistant.model or 'none'})")] + [
            (m, m) for m in models]
        self.fields["model"].help_text = "Blank: the assistant's model."

    def assistant_for(self, data: dict):
        return self.assistant

    def changes(self) -> dict:
        return settings_of(self.cleaned_data)
