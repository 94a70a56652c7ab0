# The front door. `make run` starts the product, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
# bash with pipefail: pip's output goes through a filter (a dot per package), and its failure must stop make.
SHELL := bash
.SHELLFLAGS := -o pipefail -c
# pip without -q, minus its chatter: a dot per package collected (its errors and warnings go to stderr, shown).
PIP_DOTS := awk '/^Collecting / {printf "."; fflush()} END {print ""}'
# The documentation site (without mkdocs-material's end-of-life banner on every build).
MKDOCS_BUILD := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .site

.PHONY: run test bench lint docs

$(BIN)/python:
	@echo "==> Creating the virtualenv $(VENV) (first run only)"
	$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	@echo "==> Installing requirements.txt into $(VENV): about a minute the first time, a dot per package"
	@$(BIN)/pip install --progress-bar off -r requirements.txt | $(PIP_DOTS)
	@touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt | $(BIN)/python
	@echo "==> Installing requirements-dev.txt into $(VENV): a minute or two the first time, a dot per package"
	@$(BIN)/pip install --progress-bar off -r requirements-dev.txt | $(PIP_DOTS)
	@touch $@ $(VENV)/.runtime

# The local development server: DEBUG on (the development SECRET_KEY, static files from daphne) unless the
# environment says otherwise. Without DEBUG the project refuses to start until SECRET_KEY is set.
run: export DEBUG ?= true

# daphne in the foreground with the publish-queue processor. Without REDIS_URL the processor runs
# inside the daphne process (the in-memory channel layer does not cross processes); with it, beside
# daphne as its own process, woken through Redis. Ctrl-C stops both.
run: $(VENV)/.runtime
	@echo "==> Applying database migrations (manage.py migrate)"
	@$(BIN)/python manage.py migrate --noinput
	@echo "==> Creating the demo assistant and user, once (manage.py setup_demo)"
	@echo ""
	@$(BIN)/python manage.py setup_demo
	@echo "  Open http://127.0.0.1:$(PORT)/ and log in. Admin: http://127.0.0.1:$(PORT)/admin/ (DEBUG=true $(BIN)/python manage.py createsuperuser)"
	@echo "  Embedded Assistants API: http://127.0.0.1:$(PORT)/v1/  (key: DEBUG=true $(BIN)/python manage.py create_api_key NAME)"
	@echo ""
ifeq ($(REDIS_URL),)
	@echo "==> Starting daphne on http://127.0.0.1:$(PORT)/ with the publish-queue processor inside it (BETAASSI_IN_SERVER_PROCESSOR=true, no Redis). Ctrl-C stops it."
	@BETAASSI_IN_SERVER_PROCESSOR=true $(BIN)/daphne -b 127.0.0.1 -p $(PORT) project.asgi:application
else
	@echo "==> Starting the publish-queue processor (manage.py process_publish_queue) and daphne on http://127.0.0.1:$(PORT)/, woken through Redis. Ctrl-C stops both."
	@export BETAASSI_IN_SERVER_PROCESSOR=false; \
	$(BIN)/python manage.py process_publish_queue --interval 2 & \
	trap 'kill $$! 2>/dev/null' EXIT INT TERM; \
	$(BIN)/daphne -b 127.0.0.1 -p $(PORT) project.asgi:application
endif

# lint-imports: the floors and contracts of docs/architecture.md ([tool.importlinter] in pyproject.toml); an import
# pointing up a floor, or a cycle, fails the build.
test: $(VENV)/.dev
	$(BIN)/ruff check .
	PYTHONPATH=. $(BIN)/lint-imports
	$(MKDOCS_BUILD)
	$(BIN)/python -m pytest

# The documentation site (docs/, mkdocs.yml) into .site/; --strict fails on a broken link or snippet.
docs: $(VENV)/.dev
	$(MKDOCS_BUILD)

# The peer that `make bench` measures a chat turn against (django-ai-assistant, pinned with what it resolved to in
# bench/peer/requirements.txt) in a virtualenv of its own, created once. Its failure does not stop the bench:
# bench/turns.py then says in the peer's rows why it could not run.
PEER_VENV := .venv-peer

$(PEER_VENV)/.installed: bench/peer/requirements.txt
	@echo "==> Installing the benchmark's peer (bench/peer/requirements.txt) into $(PEER_VENV): a minute the first time"
	@test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	@$(PEER_VENV)/bin/pip install --progress-bar off -r bench/peer/requirements.txt | $(PIP_DOTS)
	@touch $@

bench: $(VENV)/.dev
	@$(MAKE) --no-print-directory $(PEER_VENV)/.installed || echo "==> The peer could not be installed (above): its rows say so"
	$(BIN)/python -m bench

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=. $(BIN)/lint-imports
