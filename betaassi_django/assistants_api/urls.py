"""/v1 routes of the embedded Assistants API (mount with ``path("v1/", include(...))``)."""

from django.urls import path, re_path

from . import views as v
from .http import endpoint, unknown_path

app_name = "assistants_api"

RUN = "threads/<str:thread_id>/runs/<str:run_id>"

urlpatterns = [
    path("assistants", endpoint(GET=v.list_assistants, POST=v.create_assistant)),
    path(
        "assistants/<str:assistant_id>",
        endpoint(GET=v.retrieve_assistant, POST=v.modify_assistant, DELETE=v.delete_assistant),
    ),
    path("threads", endpoint(POST=v.create_thread)),
    path("threads/runs", endpoint(POST=v.create_thread_and_run)),
    path("threads/<str:thread_id>", endpoint(GET=v.retrieve_thread, POST=v.modify_thread, DELETE=v.delete_thread)),
    path("threads/<str:thread_id>/messages", endpoint(GET=v.list_messages, POST=v.create_message)),
    path(
        "threads/<str:thread_id>/messages/<str:message_id>",
        endpoint(GET=v.retrieve_message, POST=v.modify_message, DELETE=v.delete_message),
    ),
    path("threads/<str:thread_id>/runs", endpoint(GET=v.list_runs, POST=v.create_run)),
    path(RUN, endpoint(GET=v.retrieve_run, POST=v.modify_run)),
    path(f"{RUN}/cancel", endpoint(POST=v.cancel_run)),
    path(f"{RUN}/submit_tool_outputs", endpoint(POST=v.submit_tool_outputs)),
    path(f"{RUN}/steps", endpoint(GET=v.list_run_steps)),
    path(f"{RUN}/steps/<str:step_id>", endpoint(GET=v.retrieve_run_step)),
    re_path(r"^.*$", unknown_path),
]
