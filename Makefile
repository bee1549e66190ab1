# The two commands of README.md: `make run` starts the app, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
TESTS ?=

# Local development defaults; production sets DEBUG=0 and real values (see README).
export DEBUG ?= 1

.PHONY: run test typecheck install install-run screenshot

# `make run` needs only the runtime requirements; the tests and the benchmark add
# requirements-dev.txt. One stamp file each, so each is installed once per change.
install-run: $(VENV)/.installed-run
install: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed-run
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# A local .env (gitignored) with a generated SECRET_KEY and DEBUG=1, read by the settings, so
# the README's `.venv/bin/python manage.py ...` commands work outside make too.
.env: | $(VENV)/bin/python
	@$(PY) -c "import secrets; print('# Written by make run for local use; never used in production.'); print('DEBUG=1'); print('SECRET_KEY=' + secrets.token_urlsafe(50))" > $@
	@echo "Wrote .env (DEBUG=1 and a generated SECRET_KEY) for local manage.py commands."

# A listen backlog of 4096 (Twisted's default is 50), so a reconnect storm is queued rather
# than dropped by the kernel; the kernel caps it at net.core.somaxconn (see README).
# Client WebSocket messages over 5120 bytes (notifications.server_adapter.daphne.
# MAX_CLIENT_PAYLOAD_BYTES) are refused with 4413 before they are buffered.
DAPHNE_ARGS := --websocket-max-message-size 5120 --websocket-max-frame-size 5120

run: install-run .env
	$(PY) manage.py migrate --noinput
	$(VENV)/bin/daphne -e tcp:port=$(PORT):interface=$(HOST):backlog=4096 $(DAPHNE_ARGS) livefeed.asgi:application

test: install
	scripts/ensure-test-services
	$(PY) manage.py test --noinput $(TESTS)

# The README's picture, docs/screenshots/live-feed.png: the app on a throwaway SQLite database,
# a few comments posted, headless Chromium (scripts/screenshot.py). Run it when the page changes.
screenshot: install
	scripts/ensure-test-services
	$(PY) scripts/screenshot.py

# mypy with django-stubs over the apps and settings (configured in mypy.ini). The plugin
# imports the settings, which load only with DEBUG=1 or a SECRET_KEY (DEBUG=1 here touches
# nothing but what the checker reads).
typecheck: install
	DEBUG=1 $(VENV)/bin/mypy
