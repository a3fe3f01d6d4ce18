"""Outgoing mail (email verification) behind a small interface.

Locally and in tests mail lands as one JSON file per message in a folder
(``TRADEPLANE_MAIL_OUTBOX``); without one, messages are dropped with a warning naming
only the recipient (their bodies hold tokens, which never go to logs). A real transport
(SMTP, a provider's API) is another class with the same ``send``
(``usecases.users.Mailer``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets as _stdlib_secrets
import time
from dataclasses import asdict
from pathlib import Path

from tradeplane.domain.errors import Unavailable
from tradeplane.usecases.users import Mail, Mailer

__all__ = ["DroppingMailer", "FileMailer", "Mail", "MailError", "Mailer", "mailer_for"]

log = logging.getLogger("tradeplane.mail")


class MailError(Unavailable):
    """The message could not be handed to the transport (the outbox is not writable)."""


class FileMailer:
    """Each message as ``<ms>-<random>.json`` in ``folder`` (written whole, then renamed,
    so a reader never sees half a message)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, mail: Mail) -> None:
        """Raises MailError: the outbox folder is not writable."""
        try:
            await asyncio.to_thread(self._write, mail)
        except OSError as exc:
            raise MailError(f"mail to outbox {self.folder}: {exc.strerror or exc}") from exc

    def _write(self, mail: Mail) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{int(time.time() * 1000)}-{_stdlib_secrets.token_hex(4)}.json"
        tmp = self.folder / f".{name}.tmp"
        tmp.write_text(json.dumps(asdict(mail)))
        os.replace(tmp, self.folder / name)

    def messages(self) -> list[Mail]:
        """Every message written so far, oldest first."""
        if not self.folder.exists():
            return []
        return [Mail(**json.loads(p.read_text()))
                for p in sorted(self.folder.glob("*.json"))]


class DroppingMailer:
    """No transport configured: the message is dropped (recipient logged, body not)."""

    async def send(self, mail: Mail) -> None:
        log.warning("no mail transport configured (TRADEPLANE_MAIL_OUTBOX); dropped a "
                    "message to %s: %s", mail.to, mail.subject)


def mailer_for(outbox: str) -> Mailer:
    return FileMailer(Path(outbox)) if outbox else DroppingMailer()
