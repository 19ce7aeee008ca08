"""A party's or auditor's session: where state lives, whom to talk to, which key to use.

:class:`Session` is what every library operation of :mod:`sdk.party` takes. It never prints:
progress and notable steps go to its ``on_event`` callback (:mod:`sdk.party.events`), which
the CLI renders and a notebook may ignore.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sdk.errors import ConfigError, NotFoundError
from sdk.party.events import Event, OnEvent, ignore
from sdk.party.home import Home
from sdk.protocol.keys import KEY_FILE_MAX_BYTES, PartyKey

if TYPE_CHECKING:
    from sdk.client import Client

ENV_HOME = "SEALROOM_HOME"
ENV_COORDINATOR = "SEALROOM_COORDINATOR"
ENV_KEY = "SEALROOM_KEY"
ENV_PASSPHRASE = "SEALROOM_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret
ENV_ROOM = "SEALROOM_ROOM"
ENV_ADMIN_TOKEN = "SEALROOM_ADMIN_TOKEN"  # noqa: S105

PassphrasePrompt = Callable[[Path], bytes]
"""Asks for the passphrase of an encrypted key file (the CLI prompts on a terminal)."""


@dataclass
class Session:
    """Everything an operation needs: the home folder, the coordinator URL, the party key, the
    room, and where events go."""

    home: Home
    coordinator: str | None = None
    key_path: str | None = None
    party: str | None = None
    room: str | None = None
    on_event: OnEvent = ignore
    passphrase_prompt: PassphrasePrompt | None = None
    _key: PartyKey | None = None
    _clients: dict[str, Client] = field(default_factory=dict)

    def emit(self, event: Event) -> None:
        """Report an event to whoever listens."""
        self.on_event(event)

    # -- key ------------------------------------------------------------------------------

    def key_file(self) -> Path:
        """The party key file to use: ``key_path``, ``party`` (HOME/keys/NAME.key),
        ``SEALROOM_KEY``, or the only key in the home folder.

        Raises ``ConfigError`` when there is no key or several to choose from.
        """
        if self.key_path:
            return Path(self.key_path).expanduser()
        if self.party:
            return self.home.key_path(self.party)
        env = os.environ.get(ENV_KEY)
        if env:
            return Path(env).expanduser()
        keys = self.home.key_names()
        if len(keys) == 1:
            return self.home.key_path(keys[0])
        if not keys:
            raise ConfigError("no party key: run `sealroom keys new NAME` or pass --key FILE")
        raise ConfigError(f"several keys in {self.home.root}: choose one with --as NAME")

    def key(self) -> PartyKey:
        """The party's private key; an encrypted key file is opened with
        ``SEALROOM_PASSPHRASE`` or the ``passphrase_prompt``.

        Raises ``NotFoundError`` (no such file), ``ConfigError`` (encrypted, no passphrase),
        ``InputError``/``DecryptionError`` (not a key file, wrong passphrase).
        """
        if self._key is None:
            path = self.key_file()
            if not path.is_file():
                raise NotFoundError(f"key file {path} does not exist")
            data = path.read_bytes()[: KEY_FILE_MAX_BYTES + 1]
            passphrase: bytes | None = None
            if b'"encrypted":true' in data:
                env = os.environ.get(ENV_PASSPHRASE)
                if env is not None:
                    passphrase = env.encode()
                elif self.passphrase_prompt is not None:
                    passphrase = self.passphrase_prompt(path)
                else:
                    raise ConfigError(f"{path.name} is encrypted: set {ENV_PASSPHRASE}")
            self._key = PartyKey.from_file_bytes(data, passphrase)
        return self._key

    # -- coordinator --------------------------------------------------------------------------

    def coordinator_url(self) -> str:
        """The coordinator's base URL (``coordinator`` or ``SEALROOM_COORDINATOR``).

        Raises ``ConfigError`` when neither is set.
        """
        url = self.coordinator or os.environ.get(ENV_COORDINATOR)
        if not url:
            raise ConfigError(f"no coordinator: pass --coordinator URL or set {ENV_COORDINATOR}")
        return url.rstrip("/")

    def client(self, *, as_party: bool = True) -> Client:
        """An HTTP client of the coordinator, authenticated as the party when ``as_party``
        (otherwise with ``SEALROOM_ADMIN_TOKEN`` when set); one per kind, reused."""
        from sdk.client import Client

        slot = "party" if as_party else "anonymous"
        if slot not in self._clients:
            key = self.key() if as_party else None
            admin = os.environ.get(ENV_ADMIN_TOKEN) if not as_party else None
            self._clients[slot] = Client(self.coordinator_url(), key=key, admin_token=admin)
        return self._clients[slot]

    def room_id(self, explicit: str | None = None) -> str:
        """The room: ``explicit``, ``room``, ``SEALROOM_ROOM``, or the only room pinned in the
        home folder. Raises ``ConfigError`` when it is ambiguous."""
        room = explicit or self.room or os.environ.get(ENV_ROOM)
        if room:
            return room
        rooms = self.home.room_ids()
        if len(rooms) == 1:
            return rooms[0]
        raise ConfigError("which room? pass --room ROOM")

    def close(self) -> None:
        """Close open HTTP clients."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
