"""/v1 routes of the embedded Assistants API (mount with ``path("v1/", include(...))``)."""

from django.urls import path, re_path

from . import views
from .http import endpoint, unknown_path
from .knowledge import file_views, search_views, store_views

app_name = "assistants_api"

RUN = "threads/<str:thread_id>/runs/<str:run_id>"
VS = "vector_stores/<str:vector_store_id>"

urlpatterns = [
    path("assistants", endpoint(GET=views.list_assistants, POST=views.create_assistant)),
    path(
        "assistants/<str:assistant_id>",
        endpoint(GET=views.retrieve_assistant, POST=views.modify_assistant, DELETE=views.delete_assistant),
    ),
    path("threads", endpoint(POST=views.create_thread)),
    path("threads/runs", endpoint(POST=views.create_thread_and_run)),
    path(
        "threads/<str:thread_id>",
        endpoint(GET=views.retrieve_thread, POST=views.modify_thread, DELETE=views.delete_thread),
    ),
    path("threads/<str:thread_id>/messages", endpoint(GET=views.list_messages, POST=views.create_message)),
    path(
        "threads/<str:thread_id>/messages/<str:message_id>",
        endpoint(GET=views.retrieve_message, POST=views.modify_message, DELETE=views.delete_message),
    ),
    path("threads/<str:thread_id>/runs", endpoint(GET=views.list_runs, POST=views.create_run)),
    path(RUN, endpoint(GET=views.retrieve_run, POST=views.modify_run)),
    path(f"{RUN}/cancel", endpoint(POST=views.cancel_run)),
    path(f"{RUN}/submit_tool_outputs", endpoint(POST=views.submit_tool_outputs)),
    path(f"{RUN}/steps", endpoint(GET=views.list_run_steps)),
    path(f"{RUN}/steps/<str:step_id>", endpoint(GET=views.retrieve_run_step)),
    path("files", endpoint(GET=file_views.list_files, POST=file_views.create_file)),
    path("files/<str:file_id>", endpoint(GET=file_views.retrieve_file, DELETE=file_views.delete_file)),
    path("files/<str:file_id>/content", endpoint(GET=file_views.download_file)),
    path("vector_stores", endpoint(GET=store_views.list_vector_stores, POST=store_views.create_vector_store)),
    path(f"{VS}", endpoint(GET=store_views.retrieve_vector_store, POST=store_views.modify_vector_store,
                           DELETE=store_views.delete_vector_store)),
    path(f"{VS}/files", endpoint(GET=store_views.list_files, POST=store_views.create_file)),
    path(f"{VS}/files/<str:file_id>", endpoint(GET=store_views.retrieve_file, POST=store_views.update_file,
                                               DELETE=store_views.delete_file)),
    path(f"{VS}/files/<str:file_id>/content", endpoint(GET=store_views.file_content)),
    path(f"{VS}/file_batches", endpoint(POST=store_views.create_batch)),
    path(f"{VS}/file_batches/<str:batch_id>", endpoint(GET=store_views.retrieve_batch)),
    path(f"{VS}/file_batches/<str:batch_id>/cancel", endpoint(POST=store_views.cancel_batch)),
    path(f"{VS}/file_batches/<str:batch_id>/files", endpoint(GET=store_views.list_batch_files)),
    path(f"{VS}/search", endpoint(POST=search_views.search_vector_store)),
    re_path(r"^.*$", unknown_path),
]
