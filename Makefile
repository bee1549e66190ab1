# The two commands of README.md: `make run` starts the app, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
TESTS ?=

# Local development defaults; production sets DEBUG=0 and real values (see README).
export DEBUG ?= 1

.PHONY: run test typecheck install

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# A listen backlog of 4096 (Twisted's default is 50), so a reconnect storm is queued rather
# than dropped by the kernel; the kernel caps it at net.core.somaxconn (see README).
# Client WebSocket messages over 5120 bytes (notifications.server_adapter.daphne.
# MAX_CLIENT_PAYLOAD_BYTES) are refused with 4413 before they are buffered.
DAPHNE_ARGS := --websocket-max-message-size 5120 --websocket-max-frame-size 5120

run: install
	$(PY) manage.py migrate --noinput
	$(VENV)/bin/daphne -e tcp:port=$(PORT):interface=$(HOST):backlog=4096 $(DAPHNE_ARGS) livefeed.asgi:application

test: install
	scripts/ensure-test-services
	$(PY) manage.py test --noinput $(TESTS)

# mypy with django-stubs over the apps and settings (configured in mypy.ini). The plugin
# imports the settings, which load only with DEBUG=1 or a SECRET_KEY (DEBUG=1 here touches
# nothing but what the checker reads).
typecheck: install
	DEBUG=1 $(VENV)/bin/mypy
