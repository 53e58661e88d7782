"""The gRPC server: the ``Messaging`` service, the standard health service (for load balancers)
and server reflection (for ``grpcurl``), on ``grpc_port``, with TLS when a certificate is set."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tidings.config import Settings
from tidings.errors import ConfigError
from tidings.rpc.messaging import MessagingService
from tidings.services import Service
from tidings.v1 import messaging_pb2 as pb
from tidings.v1 import messaging_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Messaging"].full_name


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.grpc_tls_cert is None or settings.grpc_tls_key is None:
        return None
    try:
        chain = Path(settings.grpc_tls_cert).read_bytes()
        key = Path(settings.grpc_tls_key).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"grpc_tls_cert / grpc_tls_key: cannot read {exc.filename}: {exc.strerror}"
        ) from exc
    return grpc.ssl_server_credentials([(key, chain)])


class GrpcServer:
    """A started gRPC server over a :class:`Service` (which its owner starts and closes)."""

    def __init__(self, service: Service, settings: Settings) -> None:
        self.settings = settings
        self.server = grpc.aio.server(
            options=[
                # A call's message may be as large as a REST request's body.
                ("grpc.max_receive_message_length", settings.max_request_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        # The service's own checker: a key's rate counts its REST and gRPC calls together.
        pb_grpc.add_MessagingServicer_to_server(MessagingService(service, service.key_checker), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (TLS when configured) and serve; the port. A port that cannot
        be bound stops start-up with a :class:`ConfigError` naming it."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        credentials = _credentials(self.settings)
        try:
            if credentials is not None:
                self.port = self.server.add_secure_port(address, credentials)
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"grpc_port: cannot listen on {address} ({exc})") from exc
        if self.port == 0:
            raise ConfigError(f"grpc_port: cannot listen on {address} (in use?)")
        await self.server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "gRPC API listening on %s%s",
            address,
            " (TLS)" if credentials is not None else "",
            extra={"action": "start", "grpc_port": self.port},
        )
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Say NOT_SERVING, let calls in flight finish for ``grace`` seconds, then stop."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
