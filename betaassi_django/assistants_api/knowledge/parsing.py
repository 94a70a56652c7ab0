"""A file's text, for ingestion: plain text, Markdown, HTML, PDF, DOCX, JSON and source code.

The file name's extension decides the format; a name without a known extension is sniffed (``%PDF-``, a ZIP
holding ``word/document.xml``, an HTML tag, JSON, text). A file whose content does not match its extension is not
guessed at: it fails, with a message saying what was expected. Anything that yields no text raises ``ParseError``
(its ``code`` is the ``last_error.code`` of the specification: ``invalid_file`` or ``unsupported_file``).
"""

from __future__ import annotations

import io
import json
import zipfile
from html.parser import HTMLParser
from pathlib import PurePosixPath

TEXT = {".txt", ".md", ".markdown", ".rst", ".csv", ".log", ".tex", ".xml", ".yaml", ".yml", ".toml", ".ini"}
CODE = {".py", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".java", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".go", ".rs",
        ".rb", ".php", ".sh", ".bash", ".css", ".scss", ".kt", ".swift", ".scala", ".sql", ".pl", ".lua", ".r"}
HTML = {".html", ".htm", ".xhtml"}
#: Elements whose content is not text a reader sees.
HIDDEN = {"script", "style", "noscript", "template", "head"}
BLOCKS = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "h1", "h2", "h3", "h4", "h5",
          "h6", "pre", "blockquote", "title", "header", "footer", "dt", "dd"}


class ParseError(Exception):
    def __init__(self, message: str, code: str = "invalid_file") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _decode(data: bytes, what: str) -> str:
    """UTF-8 (a BOM is dropped) or UTF-16 with a BOM; bytes that are neither are not text."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ParseError(f"The file is not valid UTF-8 text, as a {what} file must be.") from None
    if "\x00" in text:
        raise ParseError(f"The file holds binary data (NUL bytes), not {what} text.")
    return text


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in HIDDEN:
            self.hidden += 1
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_text(source: str) -> str:
    parser = _Text()
    parser.feed(source)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ParseError("The PDF is encrypted; upload it without a password.")
        return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages)
    except ParseError:
        raise
    except Exception as error:  # pypdf raises many kinds on a damaged file
        raise ParseError(f"The file could not be read as a PDF: {error}") from None


def docx_text(data: bytes) -> str:
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as error:
        raise ParseError(f"The file could not be read as a DOCX document: {error}") from None
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text for cell in row.cells))
    return "\n".join(parts)


def json_text(data: bytes) -> str:
    try:
        value = json.loads(_decode(data, "JSON"))
    except ValueError as error:
        raise ParseError(f"The file is not valid JSON: {error}") from None
    except RecursionError:
        raise ParseError("The JSON file is nested too deeply to be read.") from None
    return json.dumps(value, indent=2, ensure_ascii=False)


def sniff(data: bytes) -> str:
    """The format of a file whose name says nothing."""
    if data.startswith(b"%PDF-"):
        return ".pdf"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                if "word/document.xml" in archive.namelist():
                    return ".docx"
        except zipfile.BadZipFile:
            pass
        raise ParseError("The file is an archive of an unsupported kind.", "unsupported_file")
    head = data[:2048].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
        return ".html"
    if head[:1] in (b"{", b"["):
        try:
            json.loads(data)
            return ".json"
        except RecursionError:
            return ".json"  # which says why it cannot be read
        except ValueError:
            pass
    return ".txt"


def extract(data: bytes, filename: str) -> str:
    """The file's text, or ``ParseError``."""
    suffix = PurePosixPath(filename or "").suffix.lower()
    if suffix not in TEXT | CODE | HTML | {".pdf", ".docx", ".json"}:
        suffix = sniff(data)
    if suffix == ".pdf":
        text = pdf_text(data)
    elif suffix == ".docx":
        text = docx_text(data)
    elif suffix == ".json":
        text = json_text(data)
    elif suffix in HTML:
        text = html_text(_decode(data, "HTML"))
    else:
        text = _decode(data, "source code" if suffix in CODE else "plain text")
    if not text.strip():
        raise ParseError("The file holds no text to index.")
    return text
