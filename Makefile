# The front door. `make run` starts the product, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: run test bench lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# The local development server: DEBUG on (the development SECRET_KEY, static files from daphne) unless the
# environment says otherwise. Without DEBUG the project refuses to start until SECRET_KEY is set.
run: export DEBUG ?= true

# daphne in the foreground with the publish-queue processor. Without REDIS_URL the processor runs
# inside the daphne process (the in-memory channel layer does not cross processes); with it, beside
# daphne as its own process, woken through Redis. Ctrl-C stops both.
run: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput
	@echo ""
	@$(BIN)/python manage.py setup_demo
	@echo "  Open http://127.0.0.1:$(PORT)/ and log in. Admin: http://127.0.0.1:$(PORT)/admin/ (DEBUG=true $(BIN)/python manage.py createsuperuser)"
	@echo "  Embedded Assistants API: http://127.0.0.1:$(PORT)/v1/  (key: DEBUG=true $(BIN)/python manage.py create_api_key NAME)"
	@echo ""
ifeq ($(REDIS_URL),)
	BETAASSI_IN_SERVER_PROCESSOR=true $(BIN)/daphne -b 127.0.0.1 -p $(PORT) project.asgi:application
else
	$(BIN)/python manage.py process_publish_queue --interval 2 & \
	trap 'kill $$! 2>/dev/null' EXIT INT TERM; \
	$(BIN)/daphne -b 127.0.0.1 -p $(PORT) project.asgi:application
endif

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(VENV)/.dev
	$(BIN)/python -m bench

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
