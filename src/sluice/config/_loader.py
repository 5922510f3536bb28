"""The loader: tokens → model, following includes and collecting every problem.

File access is injected: ``read_text(path)`` returns a file's text or raises ``OSError``;
``glob(pattern)`` lists the paths matching a wildcard pattern. Paths of ``include`` are
relative to the including file (joined with :mod:`posixpath`, which does no I/O).

Seed-dialect equivalents (DESIGN §3) are stored under the canonical directive, converted:
``max-msg-per-hour N`` → ``max-msg-rate N/h``, ``retry-interval`` → ``retry-after``,
``max-retry-time`` → ``bounce-after`` (``Setting.written_as`` keeps the original line).

Public names: Loader, ReadText, Glob. ``Loader.load`` never raises; diagnostics are returned.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType

from sluice.config import _patterns, _warmup
from sluice.config._config import Config
from sluice.config.errors import Diagnostic, Severity
from sluice.config.lexer import BLOCK_TAGS, Token, TokenKind, lex
from sluice.config.model import (
    AcctFile,
    BackoffRule,
    CategoryPattern,
    DomainBlock,
    InboundPatternList,
    InboundRule,
    Listener,
    Origin,
    Processor,
    RewriteList,
    RewriteRule,
    Setting,
    SignalsBlock,
    SmtpPatternList,
    SmtpUser,
    SourceRule,
    SpoolDir,
    VirtualMta,
    VmtaPool,
    WarmupPlanDef,
)
from sluice.config.schema import EQUIVALENTS, DirectiveSpec, DirectiveTable
from sluice.config.values import Listen, ValueFormError, format_value, parse_cidr, parse_value

__all__ = ["Glob", "Loader", "ReadText"]

ReadText = Callable[[str], str]
Glob = Callable[[str], list[str]]

#: Include nesting deeper than this is reported as an error (a guard against runaway globs;
#: PowerMTA documents no limit, Postfix's $include-style nesting rarely exceeds 3).
MAX_INCLUDE_DEPTH = 16
#: Block nesting deeper than this cannot be legal (the deepest legal nesting is 2).
MAX_BLOCK_DEPTH = 8


#: Blocks each block may contain ("global" is the top level).
_CHILDREN: dict[str, frozenset[str]] = {
    "global": BLOCK_TAGS - {"address-list"},
    "virtual-mta": frozenset({"domain"}),
    "virtual-mta-pool": frozenset({"domain"}),
    "bounce-processor": frozenset({"address-list"}),
    "feedback-loop-processor": frozenset({"address-list"}),
}
#: Directives that may be written in the seed's ``<name>value</name>`` form.
_XML_FORM = frozenset({"max-cpu-usage"})
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_DOMAIN_RE = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?\.?|\{[A-Za-z0-9_-]+\}")
_LABEL_RE = re.compile(r"\{[A-Za-z0-9_.-]+\}")
_NO_ARG_BLOCKS = frozenset(
    {
        "bounce-category-patterns",
        "bounce-processor",
        "feedback-loop-processor",
        "address-list",
        "signals",
    }
)
_NAMED_BLOCKS = frozenset(
    {
        "virtual-mta",
        "virtual-mta-pool",
        "smtp-user",
        "smtp-pattern-list",
        "pattern-list",
        "rewrite-list",
        "warmup-plan",
    }
)


@dataclass(slots=True, kw_only=True)
class _Frame:
    tag: str
    token: Token | None
    arg: str = ""
    names: tuple[str, ...] = ()
    written: tuple[str, ...] = ()
    settings: dict[str, Setting] = field(default_factory=dict)
    rules: list[object] = field(default_factory=list)
    members: list[tuple[str, Origin]] = field(default_factory=list)
    domains: list[DomainBlock] = field(default_factory=list)
    extra: object = None
    #: Directives and lines whose value had an error (so that checks do not report the
    #: same mistake again as a missing setting).
    failed: set[str] = field(default_factory=set)

    @property
    def scope(self) -> str:
        return self.tag

    @property
    def origin(self) -> Origin:
        assert self.token is not None
        return Origin(file=self.token.file, line=self.token.line)


class Loader:
    """One load of one configuration (not reusable)."""

    def __init__(self, table: DirectiveTable, read_text: ReadText, glob: Glob) -> None:
        self.table = table
        self.read_text = read_text
        self.glob = glob
        self.diags: list[Diagnostic] = []
        self.stack: list[_Frame] = [_Frame(tag="global", token=None)]
        self.files: list[str] = []
        self.include_chain: list[str] = []
        self.macros: dict[str, tuple[str, ...]] = {}
        self.vmtas: dict[str, VirtualMta] = {}
        self.pools: dict[str, VmtaPool] = {}
        self.member_lines: dict[str, list[tuple[str, Origin]]] = {}
        self.global_domains: list[DomainBlock] = []
        self.sources: list[SourceRule] = []
        self.users: dict[str, SmtpUser] = {}
        self.smtp_pattern_lists: dict[str, SmtpPatternList] = {}
        self.pattern_lists: dict[str, InboundPatternList] = {}
        self.categories: list[CategoryPattern] = []
        self.acct_files: list[AcctFile] = []
        self.spools: list[SpoolDir] = []
        self.rewrite_lists: dict[str, RewriteList] = {}
        self.processors: dict[str, list[Processor]] = {
            "bounce-processor": [],
            "feedback-loop-processor": [],
        }
        self.signals: list[SignalsBlock] = []
        self.listeners: list[Listener] = []
        self.warmup_plans: dict[str, WarmupPlanDef] = {}

    # ------------------------------------------------------------ diagnostics

    def error(self, token: Token, message: str, directive: str | None = None) -> None:
        name = token.name if directive is None else directive
        self.diags.append(
            Diagnostic(file=token.file, line=token.line, directive=name, message=message)
        )

    def warn(self, token: Token, message: str) -> None:
        self.diags.append(
            Diagnostic(
                file=token.file,
                line=token.line,
                directive=token.name,
                message=message,
                severity=Severity.WARNING,
            )
        )

    # ------------------------------------------------------------ files

    def load(self, path: str) -> Config:
        try:
            text = self.read_text(path)
        except (OSError, UnicodeError) as exc:
            self.diags.append(
                Diagnostic(file=path, line=0, directive="file", message=f"cannot read: {exc}")
            )
            text = ""
        return self.load_text(text, path)

    def load_text(self, text: str, name: str) -> Config:
        self._run(text, name)
        while len(self.stack) > 1:
            self._close_frame(self.stack[-1])
        return self._build(name)

    def _run(self, text: str, name: str) -> None:
        self.files.append(name)
        self.include_chain.append(name)
        tokens, diags = lex(text, name)
        self.diags.extend(diags)
        depth = len(self.stack)
        for token in tokens:
            match token.kind:
                case TokenKind.OPEN:
                    self._open(token)
                case TokenKind.CLOSE:
                    self._close(token)
                case TokenKind.DIRECTIVE:
                    self._directive(token)
        while len(self.stack) > depth:
            frame = self.stack[-1]
            assert frame.token is not None
            self.error(frame.token, f"<{frame.token.name}> is not closed in {name}")
            self._close_frame(frame)
        self.include_chain.pop()

    def _include(self, token: Token) -> None:
        target = token.rest.strip().strip('"')
        if not target or len(token.args) != 1:
            self.error(token, "expected one file name or wildcard pattern")
            return
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", target):
            self.error(token, f"URL includes are not supported offline: {target}")
            return
        base = posixpath.dirname(token.file) if not token.file.startswith("<") else ""
        path = posixpath.normpath(posixpath.join(base, target)) if base else target
        if any(c in target for c in "*?["):
            try:
                paths = sorted(self.glob(path))
            except (OSError, ValueError) as exc:
                self.error(token, f"cannot expand {path}: {exc}")
                return
            if not paths:
                self.warn(token, f"pattern {path} matches no file")
        else:
            paths = [path]
        for p in paths:
            if p in self.include_chain:
                chain = " -> ".join([*self.include_chain[self.include_chain.index(p) :], p])
                self.error(token, f"include cycle: {chain}")
                continue
            if len(self.include_chain) >= MAX_INCLUDE_DEPTH:
                self.error(token, f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
                continue
            try:
                text = self.read_text(p)
            except (OSError, UnicodeError) as exc:
                self.error(token, f"cannot include {p}: {exc}")
                continue
            self._run(text, p)

    # ------------------------------------------------------------ blocks

    def _push_ignored(self, token: Token) -> None:
        self.stack.append(_Frame(tag="ignored", token=token))

    def _open(self, token: Token) -> None:
        parent = self.stack[-1]
        tag = token.name
        if parent.tag == "ignored":
            self._push_ignored(token)
            return
        if tag not in BLOCK_TAGS:
            spec = self.table.lookup(tag)
            hint = f"; write it as a directive: {tag} VALUE" if spec is not None else ""
            self.error(token, f"unknown block <{tag}>{hint}")
            self._push_ignored(token)
            return
        if tag not in _CHILDREN.get(parent.tag, frozenset()) or len(self.stack) >= MAX_BLOCK_DEPTH:
            where = "at top level" if parent.tag == "global" else f"inside <{parent.tag}>"
            self.error(token, f"<{tag}> is not allowed {where}")
            self._push_ignored(token)
            return
        frame = self._frame_for(token)
        if frame is None:
            self._push_ignored(token)
        else:
            self.stack.append(frame)

    def _frame_for(self, token: Token) -> _Frame | None:
        tag, args = token.name, token.args
        if tag in _NO_ARG_BLOCKS:
            if args:
                self.error(token, f"<{tag}> takes no argument")
            return _Frame(tag=tag, token=token)
        if tag == "domain":
            return self._domain_frame(token)
        if tag == "acct-file":
            if not token.rest:
                self.error(token, "expected <acct-file PATH> or <acct-file |COMMAND ARGS>")
                return None
            return _Frame(tag=tag, token=token, arg=token.rest)
        if len(args) != 1 or not args[0]:
            self.error(token, f"expected exactly one argument: <{tag} NAME>")
            return None
        arg = args[0]
        if tag in _NAMED_BLOCKS and not _NAME_RE.fullmatch(arg):
            self.error(token, f"invalid name {arg!r} (letters, digits, '.', '-', '_')")
            return None
        if tag == "source" and not _LABEL_RE.fullmatch(arg):
            try:
                parse_cidr(arg)
            except ValueFormError as exc:
                self.error(token, f"<source> needs an address, CIDR or {{name}}: {exc}")
                return None
        if tag == "smtp-listener":
            try:
                parse_value("listen", arg)
            except ValueFormError as exc:
                self.error(token, str(exc))
                return None
        return _Frame(tag=tag, token=token, arg=arg)

    def _domain_frame(self, token: Token) -> _Frame | None:
        if not token.args:
            self.error(token, "expected <domain NAME...> (a domain, *, default or $macro)")
            return None
        names: list[str] = []
        for raw in token.args:
            word = raw.lower()
            if word in ("*", "default"):
                names.append("*")
            elif word.startswith("$"):
                macro = self.macros.get(word[1:])
                if macro is None:
                    self.error(
                        token,
                        f"unknown domain macro {raw} "
                        f"(define it first: domain-macro {raw[1:]} a.com,b.com)",
                    )
                    return None
                names.extend(macro)
            elif _DOMAIN_RE.fullmatch(word):
                names.append(word.rstrip("."))
            else:
                self.error(token, f"invalid domain name {raw!r}")
                return None
        return _Frame(
            tag="domain", token=token, names=tuple(dict.fromkeys(names)), written=token.args
        )

    def _close(self, token: Token) -> None:
        tag = token.name
        open_tags = [f.token.name for f in self.stack[1:] if f.token is not None]
        if tag not in open_tags:
            self.error(token, f"stray </{tag}>: no <{tag}> block is open", directive=f"</{tag}>")
            return
        while True:
            frame = self.stack[-1]
            assert frame.token is not None
            if frame.token.name == tag:
                self._close_frame(frame)
                return
            self.error(
                frame.token,
                f"<{frame.token.name}> is not closed (found </{tag}> on line {token.line})",
            )
            self._close_frame(frame)

    def _close_frame(self, frame: _Frame) -> None:
        self.stack.pop()
        if frame.tag == "ignored":
            return
        parent = self.stack[-1]
        settings = MappingProxyType(dict(frame.settings))
        origin = frame.origin
        assert frame.token is not None
        match frame.tag:
            case "domain":
                rules = tuple(r for r in frame.rules if isinstance(r, BackoffRule))
                container = parent.arg if parent.tag != "global" else None
                block = DomainBlock(
                    names=frame.names,
                    written=frame.written,
                    settings=settings,
                    backoff_rules=rules,
                    origin=origin,
                    container=container,
                )
                (parent.domains if parent.tag != "global" else self.global_domains).append(block)
            case "virtual-mta" | "virtual-mta-pool":
                if not self._unique_name(frame):
                    return
                if frame.tag == "virtual-mta":
                    self.diags.extend(_warmup.check_vmta(frame.arg, settings, frame.failed))
                    self.vmtas[frame.arg] = VirtualMta(
                        name=frame.arg,
                        settings=settings,
                        domains=tuple(frame.domains),
                        origin=origin,
                    )
                else:
                    self.pools[frame.arg] = VmtaPool(
                        name=frame.arg,
                        members=tuple(dict.fromkeys(m for m, _ in frame.members)),
                        settings=settings,
                        domains=tuple(frame.domains),
                        origin=origin,
                    )
                    self.member_lines[frame.arg] = frame.members
            case "source":
                is_label = _LABEL_RE.fullmatch(frame.arg) is not None
                self.sources.append(
                    SourceRule(
                        network=None if is_label else parse_cidr(frame.arg),
                        label=frame.arg if is_label else None,
                        settings=settings,
                        origin=origin,
                    )
                )
            case "smtp-user":
                self._dup(frame, frame.arg in self.users, "smtp-user")
                self.users[frame.arg] = SmtpUser(name=frame.arg, settings=settings, origin=origin)
            case "smtp-pattern-list":
                self._dup(frame, frame.arg in self.smtp_pattern_lists, "smtp-pattern-list")
                rules = tuple(r for r in frame.rules if isinstance(r, BackoffRule))
                self.smtp_pattern_lists[frame.arg] = SmtpPatternList(
                    name=frame.arg, rules=rules, origin=origin
                )
            case "pattern-list":
                self._dup(frame, frame.arg in self.pattern_lists, "pattern-list")
                inbound = tuple(r for r in frame.rules if isinstance(r, InboundRule))
                self.pattern_lists[frame.arg] = InboundPatternList(
                    name=frame.arg, rules=inbound, origin=origin
                )
            case "bounce-category-patterns":
                self.categories.extend(r for r in frame.rules if isinstance(r, CategoryPattern))
            case "rewrite-list":
                self._dup(frame, frame.arg in self.rewrite_lists, "rewrite-list")
                rewrites = tuple(r for r in frame.rules if isinstance(r, RewriteRule))
                self.rewrite_lists[frame.arg] = RewriteList(
                    name=frame.arg, rules=rewrites, origin=origin
                )
            case "acct-file":
                pipe = frame.arg.startswith("|")
                self.acct_files.append(
                    AcctFile(
                        path=None if pipe else frame.arg.strip('"'),
                        command=frame.arg[1:].strip() if pipe else None,
                        settings=settings,
                        origin=origin,
                    )
                )
            case "spool":
                self.spools.append(SpoolDir(path=frame.arg, settings=settings, origin=origin))
            case "address-list":
                parent.members.extend(frame.members)
            case "bounce-processor" | "feedback-loop-processor":
                self.processors[frame.tag].append(
                    Processor(
                        kind=frame.tag,
                        domains=tuple(m for m, _ in frame.members),
                        settings=settings,
                        origin=origin,
                    )
                )
            case "signals":
                self.signals.append(SignalsBlock(settings=settings, origin=origin))
            case "warmup-plan":
                plan, diags = _warmup.build_plan(
                    frame.arg, origin, frame.rules, settings, frozenset(frame.failed)
                )
                self.diags.extend(diags)
                first = self.warmup_plans.get(frame.arg)
                if first is not None:
                    self.error(
                        frame.token,
                        f"duplicate <warmup-plan {frame.arg}>: already defined at {first.origin}",
                    )
                else:
                    self.warmup_plans[frame.arg] = plan
            case "smtp-listener":
                listen = parse_value("listen", frame.arg)
                assert isinstance(listen, Listen)
                self.listeners.append(Listener(listen=listen, settings=settings, origin=origin))

    def _unique_name(self, frame: _Frame) -> bool:
        assert frame.token is not None
        for kind, seen in (("virtual-mta", self.vmtas), ("virtual-mta-pool", self.pools)):
            if frame.arg in seen:
                first = seen[frame.arg].origin
                self.error(
                    frame.token,
                    f"duplicate name {frame.arg!r}: already a <{kind}> at {first}",
                )
                return False
        return True

    def _dup(self, frame: _Frame, exists: bool, kind: str) -> None:
        if exists:
            assert frame.token is not None
            self.error(frame.token, f"duplicate <{kind} {frame.arg}>; the later one is used")

    # ------------------------------------------------------------ directives

    def _directive(self, token: Token) -> None:
        frame = self.stack[-1]
        if token.name == "include" and frame.tag != "ignored":
            self._include(token)
            return
        match frame.tag:
            case "ignored":
                return
            case "smtp-pattern-list" | "pattern-list" | "bounce-category-patterns" | "rewrite-list":
                self._rule_line(frame, token)
                return
            case "address-list":
                if token.name == "domain" and len(token.args) == 1:
                    frame.members.append(
                        (token.args[0].lower(), Origin(file=token.file, line=token.line))
                    )
                else:
                    self.error(token, "expected: domain NAME")
                return
        if token.name == "domain-macro":
            self._macro(frame, token)
            return
        if frame.tag == "warmup-plan" and token.name in _warmup.LINE_NAMES:
            try:
                frame.rules.append(_warmup.parse_line(token, self.macros, _DOMAIN_RE))
            except ValueFormError as exc:
                self.error(token, str(exc))
                frame.failed.add(token.name)
            return
        if frame.tag == "domain" and _patterns.is_inline_rule(token):
            try:
                frame.rules.append(_patterns.parse_inline_rule(token))
            except ValueFormError as exc:
                self.error(token, str(exc))
            return
        if frame.tag == "virtual-mta-pool" and token.name == "virtual-mta":
            if len(token.args) != 1 or not _NAME_RE.fullmatch(token.args[0]):
                self.error(token, "expected: virtual-mta NAME")
            else:
                frame.members.append((token.args[0], Origin(file=token.file, line=token.line)))
            return
        self._setting(frame, token)

    def _rule_line(self, frame: _Frame, token: Token) -> None:
        try:
            match frame.tag:
                case "smtp-pattern-list":
                    frame.rules.append(_patterns.parse_reply_rule(token, frame.arg))
                case "pattern-list":
                    frame.rules.append(_patterns.parse_inbound_rule(token))
                case "bounce-category-patterns":
                    frame.rules.append(_patterns.parse_category_pattern(token))
                case _:
                    frame.rules.append(_patterns.parse_rewrite_rule(token))
        except ValueFormError as exc:
            self.error(token, str(exc))

    def _macro(self, frame: _Frame, token: Token) -> None:
        if frame.tag != "global":
            self.error(token, f"not allowed inside <{frame.tag}>; define macros at top level")
            return
        name, _, rest = token.rest.partition(" ")
        domains = [d.strip().lower() for d in re.split(r"[,\s]+", rest) if d.strip()]
        if not _NAME_RE.fullmatch(name) or not domains:
            self.error(token, "expected: domain-macro NAME domain1,domain2,...")
            return
        bad = [d for d in domains if not _DOMAIN_RE.fullmatch(d)]
        if bad:
            self.error(token, f"invalid domain name {bad[0]!r} in macro")
            return
        if name in self.macros:
            self.warn(token, f"macro {name} redefined; later <domain ${name}> blocks use this list")
        self.macros[name] = tuple(dict.fromkeys(domains))

    def _setting(self, frame: _Frame, token: Token) -> None:
        spec = self.table.lookup(token.name)
        if spec is None:
            if _patterns.is_inline_rule(token):
                self.error(token, "an inline backoff rule (CODE TEXT *, …) belongs in a <domain>")
                return
            near = self.table.nearest(token.name)
            hint = f"; did you mean {near}?" if near else ""
            self.error(token, f"unknown directive{hint}")
            return
        scope = frame.scope
        if not spec.allowed_in(scope):
            where = "at top level" if scope == "global" else f"inside <{scope}>"
            allowed = ", ".join(sorted(spec.scopes))
            self.error(token, f"not allowed {where}; allowed in: {allowed}")
            return
        if token.xml_form and spec.name not in _XML_FORM:
            self.error(token, f"write it as a directive line: {spec.name} VALUE")
            return
        origin = Origin(file=token.file, line=token.line)
        written = token.name if token.name != spec.name else None
        if token.quoted and token.args == ("",):
            self._store(frame, token, spec, self._cleared(spec, origin, written))
            return
        text = " ".join(token.args)
        if not text:
            self.error(token, f"missing value ({spec.kind})")
            return
        try:
            value = parse_value(spec.kind, text)
        except ValueFormError as exc:
            self.error(token, str(exc))
            frame.failed.add(spec.name)
            return
        if spec.name == "queue-to" and isinstance(value, str):
            value = value.lower()
        equivalent = EQUIVALENTS.get(spec.name)
        target = self.table.lookup(equivalent[0]) if equivalent else None
        if equivalent is not None and target is not None:
            try:
                canonical = equivalent[1](format_value(spec.kind, value))
                value = parse_value(target.kind, canonical)
            except ValueFormError as exc:
                self.error(token, f"cannot convert to {target.name}: {exc}")
                return
            written = f"{token.name} {text}"
            spec = target
        setting = Setting(
            name=spec.name,
            value=(value,) if spec.repeatable else value,
            text=format_value(spec.kind, value),
            origin=origin,
            written_as=written,
        )
        self._store(frame, token, spec, setting)
        if spec.name == "smtp-listener" and frame.tag == "global" and isinstance(value, Listen):
            self.listeners.append(
                Listener(listen=value, settings=MappingProxyType({}), origin=origin)
            )

    @staticmethod
    def _cleared(spec: DirectiveSpec, origin: Origin, written: str | None) -> Setting:
        text = "" if spec.default_text is None else format_value(spec.kind, spec.default)
        value: object = () if spec.repeatable else spec.default
        return Setting(
            name=spec.name, value=value, text=text, origin=origin, written_as=written, cleared=True
        )

    def _store(self, frame: _Frame, token: Token, spec: DirectiveSpec, setting: Setting) -> None:
        old = frame.settings.get(spec.name)
        if old is not None and spec.repeatable and not setting.cleared and not old.cleared:
            assert isinstance(old.value, tuple)
            assert isinstance(setting.value, tuple)
            setting = Setting(
                name=spec.name,
                value=old.value + setting.value,
                text=f"{old.text}; {setting.text}",
                origin=old.origin,
                written_as=old.written_as,
            )
        elif old is not None and not spec.repeatable:
            self.warn(
                token, f"{spec.name} already set in this block at {old.origin}; this line wins"
            )
        frame.settings[spec.name] = setting

    # ------------------------------------------------------------ result

    def _build(self, name: str) -> Config:
        root = self.stack[0]
        return Config(
            file=name,
            files=tuple(dict.fromkeys(self.files)),
            table=self.table,
            global_settings=MappingProxyType(dict(root.settings)),
            domains=tuple(self.global_domains),
            vmtas=MappingProxyType(dict(self.vmtas)),
            pools=MappingProxyType(dict(self.pools)),
            sources=tuple(self.sources),
            smtp_users=MappingProxyType(dict(self.users)),
            smtp_pattern_lists=MappingProxyType(dict(self.smtp_pattern_lists)),
            pattern_lists=MappingProxyType(dict(self.pattern_lists)),
            bounce_category_patterns=tuple(self.categories),
            acct_files=tuple(self.acct_files),
            spools=tuple(self.spools),
            rewrite_lists=MappingProxyType(dict(self.rewrite_lists)),
            bounce_processors=tuple(self.processors["bounce-processor"]),
            feedback_loop_processors=tuple(self.processors["feedback-loop-processor"]),
            signals=tuple(self.signals),
            listeners=tuple(self.listeners),
            macros=MappingProxyType(dict(self.macros)),
            warmup_plans=MappingProxyType(dict(self.warmup_plans)),
        )
