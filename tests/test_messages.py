"""The text of an SDK message (betaassi_django.messages): the one reader the publish queue, the turns and the
mirrored Message model share, each with its own separator."""

from __future__ import annotations

from openai.types.beta.threads import Message

from betaassi_django.messages import text_of, text_of_all


def _message(*parts: dict) -> Message:
    return Message.model_validate({
        "id": "msg_1", "object": "thread.message", "created_at": 0, "thread_id": "thread_1", "role": "assistant",
        "status": "completed", "attachments": None, "metadata": {}, "assistant_id": None, "run_id": None,
        "completed_at": None, "incomplete_at": None, "incomplete_details": None, "content": list(parts)})


def _text(value: str) -> dict:
    return {"type": "text", "text": {"value": value, "annotations": []}}


IMAGE = {"type": "image_file", "image_file": {"file_id": "file_1"}}


def test_text_parts_are_joined_and_other_parts_skipped():
    message = _message(_text("one"), IMAGE, _text("two"))
    assert text_of(message) == "onetwo"  # the publish queue's events and the turns' replies
    assert text_of(message, "\n") == "one\ntwo"  # the mirrored Message.content
    assert text_of(_message(IMAGE)) == ""


def test_a_reply_of_several_messages_is_their_texts_in_order():
    assert text_of_all([_message(_text("a"), _text("b")), _message(_text("c"))]) == "abc"
    assert text_of_all([]) == ""
