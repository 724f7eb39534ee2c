"""Building kafka-python clients: the security settings, and errors that say what went wrong.

Every Kafka client anomrec creates (the runner's consumer, producer and admin client, the
command line's record, replay and produce clients) goes through :func:`open_client`, which adds
:meth:`~anomrec.streaming.config.ProcessorConfig.kafka_security` to its keyword arguments.

kafka-python retries a refused login until its 30 s bootstrap window closes, and then reports only
``Unable to bootstrap``. Worse, it usually loses the broker's answer: Kafka sends the refusal and
closes the connection at once, and kafka-python 3.0.12 drops data read in the same pass as the
close, so most attempts fail with a bare "socket disconnected". :func:`open_client` therefore builds
the client on a helper thread while watching the ``kafka`` loggers. With SASL configured, the
broker's refusal, or :data:`CLOSED_LOGINS` connections in a row that the broker closed without a
word, end the wait with a :class:`~anomrec.streaming.exceptions.ConfigError` naming the user, in
a few seconds rather than 30.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .config import ProcessorConfig
from .exceptions import ConfigError

T = TypeVar("T")

#: Connections closed by the broker before the login completed, in a row, taken as a refusal.
CLOSED_LOGINS = 5


class _LoginWatch(logging.Handler):
    """Reads kafka-python's connection failures off its log records (their arguments hold them)."""

    def __init__(self, refusals: tuple[type[BaseException], ...], closed: type[BaseException]) -> None:
        super().__init__(logging.NOTSET)
        self.refusal_types = refusals
        self.closed_type = closed
        self.refusal: BaseException | None = None
        self.closed: list[BaseException] = []  # one failure is logged several times: count each once

    def emit(self, record: logging.LogRecord) -> None:
        for arg in record.args if isinstance(record.args, tuple) else ():
            if isinstance(arg, self.refusal_types) and self.refusal is None:
                self.refusal = arg
            elif (
                isinstance(arg, self.closed_type)
                and arg.args == ("socket disconnected",)
                and not any(arg is seen for seen in self.closed)
            ):
                self.closed.append(arg)

    def verdict(self) -> BaseException | int | None:
        """The refusal, or the number of closed logins once they are enough to call it one."""
        if self.refusal is not None:
            return self.refusal
        return len(self.closed) if len(self.closed) >= CLOSED_LOGINS else None


def open_client(
    factory: Callable[..., T],
    config: ProcessorConfig,
    *,
    unreachable: str | None = None,
    **options: Any,
) -> T:
    """``factory(**config.kafka_security(), **options)``, a kafka-python client, with clear errors.

    Parameters
    ----------
    factory
        ``KafkaConsumer``, ``KafkaProducer`` or ``KafkaAdminClient``.
    config
        Its security settings go to the client; ``options`` override them.
    unreachable
        The message when no broker answers within the client's bootstrap window (30 s); by
        default one naming ``options["bootstrap_servers"]``.
    options
        The client's other keyword arguments, ``bootstrap_servers`` included.

    Raises
    ------
    ConfigError
        With SASL: the broker refused the login, or closed :data:`CLOSED_LOGINS` connections in a
        row, as it does after refusing one (the message names the user and the mechanism, never
        the password); the listener does not speak SASL, or not that mechanism. Whatever the
        protocol: no broker answered.
    """
    from kafka.errors import (  # noqa: PLC0415 - kept off the embedded path
        IllegalSaslStateError,
        KafkaConnectionError,
        KafkaTimeoutError,
        SaslAuthenticationFailedError,
        UnsupportedSaslMechanismError,
    )

    kwargs = {**config.kafka_security(), **options}
    servers = kwargs.get("bootstrap_servers")
    sasl = str(kwargs.get("security_protocol", "")).startswith("SASL_")
    box: dict[str, Any] = {}
    done = threading.Event()

    def build() -> None:
        try:
            box["client"] = factory(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    watch = _LoginWatch(
        (SaslAuthenticationFailedError, IllegalSaslStateError, UnsupportedSaslMechanismError),
        KafkaConnectionError,
    )
    kafka_logger = logging.getLogger("kafka")
    if sasl:
        # The failures are logged at WARNING and ERROR: a kafka logger set above ERROR hides
        # them, and the client's own 30 s timeout is left.
        kafka_logger.addHandler(watch)
    try:
        threading.Thread(target=build, name="anomrec-connect", daemon=True).start()
        while not done.wait(0.05) and watch.verdict() is None:
            pass
    finally:
        kafka_logger.removeHandler(watch)
    verdict = watch.verdict()
    if verdict is not None and "client" not in box:
        if not done.is_set():  # the constructor goes on retrying: close whatever it builds
            threading.Thread(target=_close_when_built, args=(done, box), daemon=True).start()
        raise ConfigError(_refused(config, servers, verdict, SaslAuthenticationFailedError))
    if "error" in box:
        if isinstance(box["error"], KafkaTimeoutError):
            message = unreachable or (
                f"no Kafka broker answered at bootstrap_servers={servers!r}: check the address and "
                "that the broker is up"
            )
            if config.security_protocol != "PLAINTEXT":
                message += (
                    f"; with security_protocol={config.security_protocol}, check too that the listener "
                    "at that address expects it"
                )
            raise ConfigError(message) from None
        raise box["error"]
    return box["client"]


def _refused(
    config: ProcessorConfig, servers: object, verdict: BaseException | int, login: type[BaseException]
) -> str:
    """What a refused login says: who, how, the broker's reason, what to check; no password."""
    who = f"SASL user {config.sasl_username!r}"
    check = (
        "check sasl_username and sasl_password (ANOMREC_SASL_PASSWORD), and that the broker's listener "
        f"expects security_protocol={config.security_protocol} and sasl_mechanism={config.sasl_mechanism}"
    )
    if isinstance(verdict, int):
        return (
            f"authentication of {who} failed at Kafka {servers} (mechanism {config.sasl_mechanism}; "
            f"the broker closed the connection {verdict} times in a row without an answer, as it does "
            f"after a refused login): {check}"
        )
    detail = str(verdict.args[0]) if verdict.args else type(verdict).__name__
    if isinstance(verdict, login):
        detail = detail.removeprefix("SaslAuthenticationFailedError: ")
        return (
            f"authentication of {who} failed at Kafka {servers} (mechanism {config.sasl_mechanism}; "
            f"the broker says: {detail}): {check}"
        )
    if type(verdict).__name__ == "IllegalSaslStateError":
        return (
            f"Kafka at {servers} does not expect a SASL login ({detail}): that listener is not a SASL "
            f"one; check bootstrap_servers, and security_protocol={config.security_protocol}"
        )
    return (
        f"Kafka at {servers} refused sasl_mechanism={config.sasl_mechanism} for {who} ({detail}): "
        "set sasl_mechanism to one that the listener enables"
    )


def _close_when_built(done: threading.Event, box: dict[str, Any]) -> None:
    done.wait()
    client = box.get("client")
    if client is not None:
        client.close()
