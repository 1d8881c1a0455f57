"""File helpers shared by every step: atomic writes and line readers whose errors name file and line."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file normal permissions (mkstemp makes it 0600), then rename it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


class InputError(ValueError):
    """Bad input file: the message names the file (and line, when known) and what is wrong."""

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Write to a temp file beside `path`, fsync, then rename; on any error the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path` for libraries that write by name (np.save, savefig); renamed on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def publish_then_mark(marker: str | os.PathLike, mark: Any, mode: str = "w") -> Iterator[Path]:
    """Publish data, then the marker that vouches for it: the old marker goes first (it never vouches for data
    being replaced), the block writes the data (each file atomically), then `mark` is written atomically to `marker`
    (a JSON object, or a function that writes it to the open file; `mode` "wb" for bytes). Readers trust the data
    only when the marker is there: an error or a kill in the block leaves none. Yields the marker's path."""
    marker = Path(marker)
    marker.unlink(missing_ok=True)
    yield marker
    if callable(mark):
        with atomic_write(marker, mode) as f:
            mark(f)
    else:
        write_json(marker, mark)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, keep_existing: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temp directory beside `target` to fill; on success it takes `target`'s place, on error it is removed.

    An existing `target` is replaced, unless `keep_existing(target)` says at that moment that it is already what we
    built (then the new copy is dropped: concurrent builders of the same thing do not disturb each other).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    graveyard: Path | None = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a published directory should not be
        yield tmp
        if target.exists():
            if keep_existing is not None and keep_existing(target):
                return
            graveyard = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old.tmp", dir=target.parent))
            with contextlib.suppress(FileNotFoundError):  # another process may have moved it already
                os.replace(target, graveyard / target.name)
        try:
            os.rename(tmp, target)
        except OSError:
            if keep_existing is None or not keep_existing(target):  # not a concurrent builder's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if graveyard is not None:
            shutil.rmtree(graveyard, ignore_errors=True)


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete what a killed writer of `path` left (its `.{name}.*.tmp*` temp files or dirs beside it)."""
    path = Path(path)
    stale = [Path(p) for p in glob.glob(glob.escape(str(path.parent / f".{path.name}.")) + "*.tmp*")]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return stale


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read one JSON document; a syntax error names the file, line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except UnicodeDecodeError as e:
        raise InputError(path, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=e.lineno) from None


def iter_lines(path: str | os.PathLike, skip: int = 0) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without newline); a non-UTF-8 line raises InputError naming it.

    With `skip`, the first line is yielded, then `skip` lines are passed over undecoded (a header, then rows from
    row `skip` on); line numbers stay those of the file.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    with f:
        first = 1
        if skip > 0:
            head = f.readline()
            if head:
                try:
                    yield 1, head.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise InputError(path, f"not valid UTF-8 ({e.reason} at byte {e.start})", line=1) from None
            first = 2 + _skip_lines(f, skip)
        for n, raw in enumerate(f, first):
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise InputError(path, f"not valid UTF-8 ({e.reason} at byte {e.start})", line=n) from None


def _skip_lines(f: IO[bytes], count: int, block: int = 1 << 22) -> int:
    """Move binary file `f` past `count` line breaks (or to its end); returns the number of lines passed."""
    passed = 0
    while passed < count:
        pos = f.tell()
        data = f.read(block)
        if not data:
            return passed
        found = data.count(b"\n")
        if passed + found < count:
            passed += found
            continue
        cut = -1
        for _ in range(count - passed):
            cut = data.index(b"\n", cut + 1)
        f.seek(pos + cut + 1)
        return count
    return passed


def count_lines(path: str | os.PathLike, block: int = 1 << 22, digest=None) -> int:
    """Lines of a file as `iter_lines` numbers them (a last line without a line break counts), from raw bytes;
    `digest` (a hashlib object), when given, is fed every byte on the way."""
    n, last = 0, b"\n"
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    with f:
        for data in iter(lambda: f.read(block), b""):
            n += data.count(b"\n")
            last = data[-1:]
            if digest is not None:
                digest.update(data)
    return n + (last != b"\n")


def iter_jsonl(path: str | os.PathLike, skip_bad_lines: bool = False, bad: list[int] | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank JSON line; malformed lines raise or are skipped into `bad`."""
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        except ValueError as e:
            if skip_bad_lines:
                if bad is not None:
                    bad.append(n)
                continue
            raise InputError(path, f"malformed JSON line: {e}", line=n) from None
        yield n, obj


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove it is writable now, before hours of work."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test."):
            pass
    except OSError as e:
        raise InputError(path, f"output directory is not writable: {e.strerror or e}") from None
    return path


def iter_json_array(path: str | os.PathLike, read_size: int = 1 << 22) -> Iterator[tuple[int, int, object]]:
    """Yield (item number, line, item) from a file holding one JSON array, without loading it whole."""
    decoder = json.JSONDecoder()
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    with f:
        buf, pos, line, eof = "", 0, 1, False

        def more(size: int) -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            try:
                data = f.read(size)
            except UnicodeDecodeError as e:
                raise InputError(path, f"not valid UTF-8 ({e.reason})") from None
            if not data:
                eof = True
                return False
            buf, pos = buf[pos:] + data, 0
            return True

        def skip_ws() -> str:
            nonlocal pos, line
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    line += buf[pos] == "\n"
                    pos += 1
                if pos < len(buf) or not more(read_size):
                    return buf[pos] if pos < len(buf) else ""

        if skip_ws() != "[":
            raise InputError(path, "expected a JSON list of questions (DPR format)", line=line)
        pos += 1
        n = 0
        if skip_ws() == "]":
            return
        while True:
            size = read_size
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as e:
                    if not more(size):
                        raise InputError(path, f"malformed JSON: {e.msg}", line=line + buf.count("\n", pos, e.pos)) from None
                    size *= 2
            yield n, line, obj
            n += 1
            line += buf.count("\n", pos, end)
            pos = end
            c = skip_ws()
            pos += 1
            if c == "]":
                return
            if c != ",":
                raise InputError(path, "expected ',' or ']' between list items", line=line)
            skip_ws()
