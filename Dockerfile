FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
# Hashed, compressed static files for WhiteNoise; the key is only used for this build step.
RUN DEBUG=0 SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput

RUN useradd --system --no-create-home livefeed
USER livefeed
EXPOSE 8000
# No --proxy-headers: the client-writable left-most X-Forwarded-For must not become REMOTE_ADDR;
# the rate limit reads the right-most entry the load balancer added (TRUSTED_PROXY_COUNT).
# backlog=4096 (Twisted's default is 50): a reconnect storm is queued, not dropped by the kernel;
# the kernel caps it at net.core.somaxconn (set it at least as high on the host).
# Client WebSocket messages over 5120 bytes are refused with 4413 before they are buffered
# (notifications.server_adapter.daphne.MAX_CLIENT_PAYLOAD_BYTES).
CMD ["daphne", "-e", "tcp:port=8000:interface=0.0.0.0:backlog=4096", "--websocket-max-message-size", "5120", "--websocket-max-frame-size", "5120", "livefeed.asgi:application"]
