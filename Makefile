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

# daphne in the foreground and the publish-queue processor beside it; Ctrl-C stops both.
# Without REDIS_URL the processor cannot be woken across processes, so it polls every 0.2 s.
run: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput
	@echo ""
	@echo "  betaassi-django serves the embedded Assistants API at http://127.0.0.1:$(PORT)/v1/"
	@echo "  Create a key for it:  $(BIN)/python manage.py create_api_key my-laptop"
	@echo "  Admin:                http://127.0.0.1:$(PORT)/admin/  ($(BIN)/python manage.py createsuperuser)"
	@echo ""
	$(BIN)/python manage.py process_publish_queue --interval $(if $(REDIS_URL),2,0.2) & \
	trap 'kill $$! 2>/dev/null' EXIT INT TERM; \
	$(BIN)/daphne -b 127.0.0.1 -p $(PORT) project.asgi:application

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(VENV)/.dev
	$(BIN)/python -m bench

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
