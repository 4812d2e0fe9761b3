"""Where the email templates and catalogs come from, and the sandbox they render in.

The shipped ``templates/`` folder holds every template and catalog. An operator
may point ``DUNNING_TEMPLATES_DIR`` at a folder of the same shape
(``email/…``, ``locale/<lang>/LC_MESSAGES/messages.po``) holding only what they
change: a template there replaces the shipped one of the same name (layout
included), and a catalog there is read before the shipped one of its language,
so it may translate a few sentences and leave the rest to ours. Nothing is forked.

Every template renders in Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment`:
an operator's template may print and choose, but it cannot reach Python
internals (``__class__``, ``__globals__``...), which the sandbox refuses with a
``SecurityError``.
"""

from __future__ import annotations

import gettext as gettext_module
import io
import threading
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.bccache import Bucket, BytecodeCache
from jinja2.sandbox import SandboxedEnvironment


def template_folders(root: Path) -> list[Path]:
    """``root/email`` (the layouts) then each workflow's folder under it: a kind's name is unique."""
    email_dir = root / "email"
    if not email_dir.is_dir():
        return []
    return [email_dir, *sorted(p for p in email_dir.iterdir() if p.is_dir())]


def make_loader(shipped: Path, override: Path | None = None) -> BaseLoader:
    """The operator's templates first (when there is a folder), then the shipped ones."""
    loaders: list[BaseLoader] = []
    if override is not None:
        folders = template_folders(override)
        if folders:
            loaders.append(FileSystemLoader(folders))
    loaders.append(FileSystemLoader(template_folders(shipped)))
    return ChoiceLoader(loaders)


def find_catalogs(root: Path | None) -> dict[str, Path]:
    """Language -> ``messages.po`` under ``root/locale`` (empty when there is none)."""
    if root is None or not (root / "locale").is_dir():
        return {}
    return {po.parent.parent.name: po for po in sorted((root / "locale").glob("*/LC_MESSAGES/messages.po"))}


def load_translations(po_path: Path, language: str) -> gettext_module.GNUTranslations:
    """Compile a ``.po`` catalog in memory into a ``GNUTranslations`` object.

    Fuzzy entries are left out (``write_mo``'s default), as gettext would: a
    guessed translation is worse than the English original.
    """
    with po_path.open("rb") as fh:
        catalog = read_po(fh, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext_module.GNUTranslations(buffer)


def translations_for(
    language: str, shipped: dict[str, Path], operator: dict[str, Path]
) -> gettext_module.NullTranslations:
    """The operator's catalog for ``language`` in front of ours; English (no catalog) translates nothing."""
    chain: list[gettext_module.NullTranslations] = [
        load_translations(catalogs[language], language)
        for catalogs in (operator, shipped)
        if language in catalogs
    ]
    if not chain:
        return gettext_module.NullTranslations()
    first = chain[0]
    for fallback in chain[1:]:
        first.add_fallback(fallback)
    return first


class SharedBytecode(BytecodeCache):
    """Compiled templates shared by the environments of one renderer, in memory.

    Each language has its own environment (its gettext installed), but the same
    options, so a template compiles to the same code in all of them: compiled once,
    not once per language (nine times the start-up check's 38 templates took
    3.4 s of the 4 s a worker spent checking them before it could boot). Jinja
    checks each entry against the template's source before using it.
    """

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def load_bytecode(self, bucket: Bucket) -> None:
        with self._lock:
            code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        code = bucket.bytecode_to_string()
        with self._lock:
            self._code[bucket.key] = code


def make_environment(
    loader: BaseLoader,
    translations: gettext_module.NullTranslations,
    bytecode: BytecodeCache | None = None,
) -> SandboxedEnvironment:
    """A sandboxed environment with autoescaped HTML, strict variables and gettext installed.

    ``bytecode``: where compiled templates are shared with the renderer's other environments
    (they must all be made by this function, whose options decide the compiled code).
    """
    env = SandboxedEnvironment(
        loader=loader,
        bytecode_cache=bytecode,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        # No trim_blocks: a line holding only a tag then renders as a blank
        # line, which is what separates paragraphs in the text templates.
        lstrip_blocks=True,
        # Templates do not change under a running worker; skipping the mtime check saves a stat per render.
        auto_reload=False,
    )
    # Collapse whitespace inside {% trans %} so template line breaks never reach the msgids.
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    return env


def template_names(loader: BaseLoader) -> list[str]:
    """Every template the loader can find by its short name (``layout.html``, ``payment_failed.txt``)."""
    return sorted({name for name in loader.list_templates() if "/" not in name and not name.startswith(".")})
