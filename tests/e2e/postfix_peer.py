"""A private, strict Postfix instance on a loopback address that delivers to Maildirs.

It is the ground truth of the end-to-end tests (test-plan §6.1 "real receiver"): its own
config, queue and data directories under a temp dir, no chroot, started with
``postfix -c DIR start-fg`` and stopped with ``postfix -c DIR stop``; strict framing
(``smtpd_forbid_bare_newline = reject`` with no exclusions, ``smtpd_forbid_unauth_pipelining``);
configurable ``smtpd_recipient_limit`` and ``message_size_limit``; optional per-recipient
replies (``check_recipient_access``) and STARTTLS with a self-signed certificate. Every address
of the given domains is accepted and delivered by ``virtual(8)`` to ``mail/<domain>/``.

Public names:
    PostfixReceiver(workdir, *, host, port, domains, ...)  context manager; ``start()`` raises
        PeerError when Postfix does not come up (with its log)
    MaildirMessage                                       one delivered file
    POSTFIX                                              path of the postfix command
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.ledger import Delivery, parse_delivery
from tests.e2e.peers import PeerError, stop_process, wait_for_greeting

__all__ = ["POSTFIX", "MaildirMessage", "PostfixReceiver"]

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
#: Mailbox owner for virtual(8): it refuses uids below virtual_minimum_uid (100).
MAILBOX_USER = "nobody"
_POLL = 0.05

# service type private unpriv chroot wakeup maxproc command (master(5)); chroot is always "n".
_MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup     unix n - n 60 1 pickup
cleanup    unix n - n - 0 cleanup
qmgr       unix n - n 300 1 qmgr
tlsmgr     unix - - n 1000? 1 tlsmgr
rewrite    unix - - n - - trivial-rewrite
bounce     unix - - n - 0 bounce
defer      unix - - n - 0 bounce
trace      unix - - n - 0 bounce
verify     unix - - n - 1 verify
flush      unix n - n 1000? 0 flush
proxymap   unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
showq      unix n - n - - showq
error      unix - - n - - error
retry      unix - - n - - error
discard    unix - - n - - discard
virtual    unix - n n - - virtual
anvil      unix - - n - 1 anvil
scache     unix - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class MaildirMessage:
    """One file in a Maildir, with the envelope recipient Postfix recorded in it."""

    path: Path
    recipient: str  #: X-Original-To (else Delivered-To), lower-cased
    raw: bytes

    def deliveries(self, source: str) -> list[Delivery]:
        return parse_delivery(self.raw, [self.recipient], source)


def _header(raw: bytes, name: bytes) -> str | None:
    prefix = name.lower() + b":"
    for line in raw.split(b"\n"):
        if not line.strip():
            return None
        if line.lower().startswith(prefix):
            return line[len(prefix) :].strip().decode("utf-8", "replace")
    return None


class PostfixReceiver:
    """A Postfix that accepts mail for ``domains`` on ``host:port`` into Maildirs."""

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.2",
        port: int,
        domains: Sequence[str] = ("ok.test",),
        hostname: str = "mx.ok.test",
        recipient_limit: int = 10,
        message_size_limit: int = 1_000_000,
        recipient_access: Mapping[str, str] | None = None,
        tls: bool = False,
        main_cf: Mapping[str, str] | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.host, self.port = host, port
        self.domains = tuple(domains)
        self.root = workdir / f"postfix-{host}-{port}"
        self.etc = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.mail = self.root / "mail"
        self.maillog = self.root / "maillog"
        self.out_path = self.root / "postfix.out"
        self.hostname = hostname
        self.recipient_limit = recipient_limit
        self.message_size_limit = message_size_limit
        self.recipient_access = dict(recipient_access or {})
        self.tls = tls
        self.overrides = dict(main_cf or {})
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._seen: dict[Path, MaildirMessage] = {}

    # -- configuration ----------------------------------------------------------------------

    def _main_cf(self) -> dict[str, str]:
        etc = self.etc
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "multi_instance_directories": "",
            "myhostname": self.hostname,
            "mydomain": "receiver.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_transport": "error:5.1.1 local delivery disabled",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "127.0.0.1",  # must be an interface address; master.cf binds host
            "inet_protocols": "ipv4",
            "mynetworks": f"{self.host}/32",
            "relay_domains": "",
            "default_transport": "error:5.7.1 this test receiver never relays",
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "smtpd_banner": "$myhostname ESMTP test receiver",
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "biff": "no",
            "append_dot_mydomain": "no",
            # Strict framing: a bare LF is refused from every client (no exclusions).
            "smtpd_forbid_bare_newline": "reject",
            "smtpd_forbid_bare_newline_exclusions": "",
            "smtpd_forbid_unauth_pipelining": "yes",
            "smtpd_recipient_limit": str(self.recipient_limit),
            "message_size_limit": str(self.message_size_limit),
            "virtual_mailbox_domains": " ".join(self.domains),
            "virtual_mailbox_maps": f"texthash:{etc / 'mailboxes'}",
            "virtual_mailbox_base": str(self.mail),
            "virtual_mailbox_limit": "0",
            "virtual_minimum_uid": "100",
            "virtual_uid_maps": f"static:{self._uid()}",
            "virtual_gid_maps": f"static:{self._gid()}",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "notify_classes": "",
        }
        if self.recipient_access:
            main["smtpd_recipient_restrictions"] = (
                f"check_recipient_access texthash:{etc / 'rcpt_access'}"
            )
        if self.tls:
            main.update(
                {
                    "smtpd_tls_security_level": "may",
                    "smtpd_tls_cert_file": str(etc / "cert.pem"),
                    "smtpd_tls_key_file": str(etc / "key.pem"),
                    "smtpd_tls_loglevel": "1",
                }
            )
        else:
            main["smtpd_tls_security_level"] = "none"
        main.update(self.overrides)
        return main

    @staticmethod
    def _uid() -> int:
        return pwd.getpwnam(MAILBOX_USER).pw_uid

    @staticmethod
    def _gid() -> int:
        return pwd.getpwnam(MAILBOX_USER).pw_gid

    def _write_config(self) -> None:
        for d in (self.etc, self.queue, self.data, self.mail):
            d.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.data, postfix_user.pw_uid, postfix_user.pw_gid)
        os.chown(self.mail, self._uid(), self._gid())
        (self.etc / "mailboxes").write_text(
            "".join(f"@{d} {d}/\n" for d in self.domains), encoding="ascii"
        )
        if self.recipient_access:
            (self.etc / "rcpt_access").write_text(
                "".join(f"{k} {v}\n" for k, v in self.recipient_access.items()), encoding="ascii"
            )
        if self.tls:
            self._make_cert()
        (self.etc / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in self._main_cf().items()), encoding="ascii"
        )
        (self.etc / "master.cf").write_text(
            _MASTER_CF.format(listen=f"{self.host}:{self.port}"), encoding="ascii"
        )
        check = subprocess.run(
            [POSTFIX, "-c", str(self.etc), "check"], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise PeerError(f"postfix check failed: {check.stdout}{check.stderr}")

    def _make_cert(self) -> None:
        subprocess.run(
            [
                OPENSSL, "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(self.etc / "key.pem"), "-out", str(self.etc / "cert.pem"),
                "-days", "2", "-subj", f"/CN={self.hostname}",
                "-addext", f"subjectAltName=DNS:{self.hostname}",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> PostfixReceiver:
        self._write_config()
        with self.out_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [POSTFIX, "-c", str(self.etc), "start-fg"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_greeting(self.host, self.port, self.start_timeout, self.proc)
        except PeerError as exc:
            self.stop()
            raise PeerError(f"{exc}\n--- postfix output ---\n{self.log_text()}") from exc
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            subprocess.run(
                [POSTFIX, "-c", str(self.etc), "stop"],
                capture_output=True,
                check=False,
                timeout=30,
            )
            master = self.master_pid()
            if master is not None and self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(master, signal.SIGTERM)
        stop_process(self.proc, 15.0)
        # master is a grandchild in its own session; make sure nothing of it survives.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self) -> PostfixReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        parts = []
        for p in (self.out_path, self.maillog):
            with contextlib.suppress(OSError):
                parts.append(p.read_text("utf-8", "replace"))
        return "\n".join(parts)

    # -- what arrived -----------------------------------------------------------------------

    def messages(self) -> list[MaildirMessage]:
        """Every delivered message (Maildir ``new/`` and ``cur/`` of every domain)."""
        # virtual(8) writes into tmp/ and renames into new/, so a file seen there is whole
        # and never changes: each is read once (large runs poll this often).
        for path in sorted(self.mail.glob("*/new/*")) + sorted(self.mail.glob("*/cur/*")):
            if path in self._seen:
                continue
            try:
                raw = path.read_bytes()
            except OSError:  # moved between listing and reading
                continue
            rcpt = _header(raw, b"X-Original-To") or _header(raw, b"Delivered-To") or ""
            self._seen[path] = MaildirMessage(path=path, recipient=rcpt.lower(), raw=raw)
        return list(self._seen.values())

    def deliveries(self) -> list[Delivery]:
        src = f"postfix:{self.host}:{self.port}"
        return [d for m in self.messages() for d in m.deliveries(src)]

    def wait_for_messages(self, count: int, timeout: float = 15.0) -> list[MaildirMessage]:
        """Poll until at least ``count`` messages are in the Maildirs (or time runs out)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(_POLL)

    def queue_count(self) -> int:
        """Messages still inside Postfix's queue (incoming, active, deferred, hold)."""
        total = 0
        for sub in ("incoming", "active", "deferred", "hold"):
            total += sum(1 for p in (self.queue / sub).rglob("*") if p.is_file())
        return total
