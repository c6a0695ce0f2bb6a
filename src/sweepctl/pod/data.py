"""FineWeb10B GPT-2 token shards: check them, download them, or make them from text.

    sweepctl data fineweb --train-shards 8 --data-dir /mnt/data/fineweb10B
    sweepctl data prepare notes/ book.txt --out data/mytext

A shard is the modded-nanogpt format the trainer reads: a 256 x int32 little-endian header
(magic 20240520, version 1, token count, zeros) followed by the tokens as uint16. Validity is
checked from the header and the file size alone, so checking 100 shards of 200 MB costs nothing.

This is the only module that imports huggingface_hub (inside the functions that need it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweepctl.errors import RemoteError, SweepctlError

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_BYTES = 2  # uint16: GPT-2's 50257 ids fit

FINEWEB_REPO = "kjj0/fineweb10B-gpt2"
VAL_SHARD = "fineweb_val_000000.bin"

# Filesystems where many small writes, renames and file locks are slow or unreliable (huggingface_hub
# locks and renames next to the file): downloads are staged on local disk and moved in whole.
NETWORK_FSTYPES = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "glusterfs", "ceph", "lustre",
                             "gpfs", "beegfs", "afs", "sshfs", "davfs"})


class ShardError(SweepctlError):
    """A shard file that is not what its header promises (truncated, foreign, or corrupted)."""


def train_shard_name(index: int) -> str:
    return f"fineweb_train_{index:06d}.bin"


def fineweb_file_names(train_shards: int) -> list[str]:
    """The files a download of `train_shards` shards consists of: val first, then train 1..N."""
    return [VAL_SHARD] + [train_shard_name(i) for i in range(1, train_shards + 1)]


# ---- the shard format -------------------------------------------------------------------------


def verify_shard(path: str | Path) -> int:
    """The shard's token count; raises ShardError saying what is wrong with it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(12)
    except OSError as e:
        raise ShardError(f"cannot read shard: {e.strerror}", where=str(path),
                         hint="download or prepare it again") from None
    if len(head) < 12 or size < HEADER_BYTES:
        raise ShardError(f"shard is {size} bytes, shorter than its {HEADER_BYTES}-byte header", where=str(path),
                         hint="the file is truncated; download or prepare it again")
    magic, version, n_tokens = struct.unpack("<3i", head)
    if magic != SHARD_MAGIC:
        raise ShardError(f"magic number mismatch in the data .bin file ({magic} != {SHARD_MAGIC})",
                         where=str(path), hint="not a GPT-2 token shard; download or prepare it again")
    if version != SHARD_VERSION:
        raise ShardError(f"unsupported shard version {version} (expected {SHARD_VERSION})", where=str(path),
                         hint="download or prepare it again")
    expected = HEADER_BYTES + TOKEN_BYTES * n_tokens
    if n_tokens < 0 or size != expected:
        raise ShardError(f"shard is {size} bytes but its header promises {n_tokens} tokens ({expected} bytes)",
                         where=str(path), hint="the file is truncated or corrupted; download it again")
    return n_tokens


def shard_problem(path: str | Path) -> str | None:
    """None when the shard is valid, else why not (missing counts as a problem)."""
    if not Path(path).is_file():
        return "missing"
    try:
        verify_shard(path)
    except ShardError as e:
        return e.message
    return None


def write_shard(path: str | Path, tokens: Any) -> int:
    """Write `tokens` (ints < 65536) as a shard, atomically. One writer for the whole tool: the
    trainer's (orchestration may import from the trainer, never the other way)."""
    from sweepctl.train.data import write_shard as trainer_write_shard

    return trainer_write_shard(path, tokens)


# ---- where the data dir lives -----------------------------------------------------------------


def mount_fstype(path: str | Path, mounts_file: str | Path = "/proc/mounts") -> str | None:
    """Filesystem type of the mount holding `path` (longest matching mount point), None if unknown."""
    target = Path(path).resolve()
    best: tuple[int, str] | None = None
    try:
        lines = Path(mounts_file).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        # /proc/mounts escapes space, tab, newline and backslash in mount points as octal (\040).
        mount_point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1]))
        if (target == mount_point or mount_point in target.parents) and (
                best is None or len(str(mount_point)) > best[0]):
            best = (len(str(mount_point)), parts[2])
    return best[1] if best else None


def is_network_fs(fstype: str | None) -> bool:
    return fstype is not None and (fstype.startswith("fuse") or fstype in NETWORK_FSTYPES)


# ---- download ---------------------------------------------------------------------------------


@dataclass
class DownloadReport:
    """What `fineweb_download` found and did, per file name."""

    data_dir: str
    files: list[str]
    kept: list[str] = field(default_factory=list)  # present and valid: not touched
    downloaded: list[str] = field(default_factory=list)  # fetched (missing or corrupt before)
    refetched: dict[str, str] = field(default_factory=dict)  # corrupt file name -> what was wrong
    staged: bool = False  # downloads went through local disk first (network/FUSE data dir)
    fstype: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.downloaded)


def fineweb_download(
    data_dir: str | Path,
    train_shards: int,
    *,
    repo_id: str = FINEWEB_REPO,
    revision: str = "main",
    endpoint: str | None = None,
    stage: bool | None = None,
    staging_root: str | Path | None = None,
    mounts_file: str | Path = "/proc/mounts",
    progress: bool = True,
) -> DownloadReport:
    """Make `data_dir` hold a valid val shard and train shards 1..N, downloading only what is missing
    or corrupt. `stage=None` stages on local disk exactly when the data dir is a FUSE/network mount.

    The endpoint is read from HF_ENDPOINT at call time (huggingface_hub itself reads it once, at
    import), so a mirror or a test server set in the environment always takes effect.
    """
    if train_shards < 0:
        raise SweepctlError(f"--train-shards must be 0 or more, got {train_shards}")
    data_dir = Path(data_dir).expanduser().absolute()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepctlError(f"cannot create the data dir: {e.strerror}", where=str(data_dir),
                            hint="choose another --data-dir or fix its permissions") from None
    report = DownloadReport(data_dir=str(data_dir), files=fineweb_file_names(train_shards))
    report.fstype = mount_fstype(data_dir, mounts_file)
    report.staged = is_network_fs(report.fstype) if stage is None else stage

    todo = []
    for name in report.files:
        problem = shard_problem(data_dir / name)
        if problem is None:
            report.kept.append(name)
        else:
            if problem != "missing":
                report.refetched[name] = problem
            todo.append(name)
    if not todo:
        return report

    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    # Pin every file to one commit, and learn up front whether the repo has them all, so a run
    # never mixes shards from two versions and never fails after downloading half of what it needs.
    commit = _resolve_commit(repo_id, revision, endpoint, todo)
    with _ProgressBars(progress) as bar_class:
        for name in todo:
            if report.staged:
                _download_staged(repo_id, commit, endpoint, name, data_dir, staging_root, bar_class)
            else:
                _hub_download(repo_id, commit, endpoint, name, data_dir, bar_class, force=name in report.refetched)
            problem = shard_problem(data_dir / name)
            if problem is not None:
                raise ShardError(f"downloaded shard is invalid: {problem}", where=str(data_dir / name),
                                 hint=f"the copy on the Hub ({repo_id}) may be damaged; try again later")
            report.downloaded.append(name)
    return report


def _resolve_commit(repo_id: str, revision: str, endpoint: str | None, needed: list[str]) -> str:
    """The commit `revision` points at, after checking that every needed file is in it."""
    from huggingface_hub import HfApi

    with _hub_errors(repo_id, revision, endpoint, "list the dataset"):
        info = HfApi(endpoint=endpoint).dataset_info(repo_id, revision=revision, timeout=30)
    available = {s.rfilename for s in info.siblings or []}
    missing = [n for n in needed if n not in available]
    if missing:
        n_train = sum(1 for n in available if n.startswith("fineweb_train_") and n.endswith(".bin"))
        raise SweepctlError(
            f"file {missing[0]} not found in dataset repo {repo_id}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            where=_where(repo_id, revision, endpoint),
            hint=f"the repo has {n_train} train shards; ask for --train-shards {n_train} or fewer")
    return info.sha or revision


def _where(repo_id: str, revision: str, endpoint: str | None) -> str:
    return f"{endpoint or 'https://huggingface.co'} dataset {repo_id}@{revision}"


def _download_staged(repo_id: str, revision: str, endpoint: str | None, name: str, data_dir: Path,
                     staging_root: str | Path | None, bar_class: Any) -> None:
    """Download into a private local temp dir, then copy into the data dir under a temp name and
    rename: the (slow) network volume only ever sees one sequential write and one rename."""
    stage_dir = Path(tempfile.mkdtemp(prefix="sweepctl-fineweb-", dir=staging_root))
    try:
        staged = _hub_download(repo_id, revision, endpoint, name, stage_dir, bar_class, force=False)
        tmp = data_dir / f".{name}.partial-{os.getpid()}"
        try:
            shutil.copyfile(staged, tmp)
            os.replace(tmp, data_dir / name)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)


def _hub_download(repo_id: str, revision: str, endpoint: str | None, name: str, local_dir: Path,
                  bar_class: Any, *, force: bool) -> Path:
    """One file from the Hub straight into `local_dir`: a real file, not a symlink into a cache."""
    from huggingface_hub import hf_hub_download

    with _hub_errors(repo_id, revision, endpoint, f"download {name}"):
        path = hf_hub_download(repo_id, name, repo_type="dataset", revision=revision, local_dir=local_dir,
                               endpoint=endpoint, force_download=force, tqdm_class=bar_class)
    return Path(path)


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str, endpoint: str | None, doing: str) -> Iterator[None]:
    """Every Hub failure as one line naming the repo/file and what to do (no library traceback)."""
    from huggingface_hub.utils import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = _where(repo_id, revision, endpoint)
    try:
        yield
    except RepositoryNotFoundError:
        raise SweepctlError(f"dataset repo {repo_id} not found", where=where,
                            hint="check the repo id and HF_ENDPOINT (and `hf auth login` if it is private)") from None
    except RevisionNotFoundError:
        raise SweepctlError(f"revision {revision} not found in dataset repo {repo_id}", where=where,
                            hint="use an existing branch, tag or commit") from None
    except LocalEntryNotFoundError:
        # huggingface_hub's way of saying the Hub could not be reached and nothing is cached.
        raise RemoteError(f"cannot reach the Hub to {doing}", where=where,
                          hint="check the network or HF_ENDPOINT; files already downloaded are kept") from None
    except EntryNotFoundError:
        raise SweepctlError(f"cannot {doing}: file not found in dataset repo {repo_id}", where=where,
                            hint="ask for fewer --train-shards (the repo may not have that many)") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise RemoteError(f"HTTP {status} from the Hub while trying to {doing}", where=where,
                          hint="try again later; files already downloaded are kept") from None
    except _transport_errors() as e:
        raise RemoteError(f"cannot reach the Hub to {doing} ({type(e).__name__})", where=where,
                          hint="check the network or HF_ENDPOINT; files already downloaded are kept") from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection/timeout errors of whichever HTTP client this huggingface_hub version uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


class _ProgressBars:
    """A tqdm-shaped class, bound to one Rich progress display, for huggingface_hub's `tqdm_class`:
    one bar per file, on stderr so `--json` output on stdout stays clean."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return _SilentBar
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        from sweepctl.console import err_console

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=err_console)
        self.progress.start()
        return _rich_bar_class(self.progress)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


class _SilentBar:
    """The tqdm subset huggingface_hub calls, doing nothing."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.n = kwargs.get("initial", 0) or 0

    def update(self, n: float = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rich_bar_class(progress: Any) -> type[_SilentBar]:
    class RichBar(_SilentBar):
        def __init__(self, *args: Any, desc: str = "", total: float | None = None, **kwargs: Any):
            super().__init__(**kwargs)
            self.task = progress.add_task(desc or "download", total=total, completed=self.n)

        def update(self, n: float = 1) -> None:
            super().update(n)
            progress.update(self.task, advance=n)

        def close(self) -> None:
            progress.update(self.task, total=self.n, completed=self.n)

    return RichBar


# ---- prepare from text ------------------------------------------------------------------------

TEXT_SUFFIXES = (".txt", ".md", ".text", ".jsonl")


@dataclass
class PrepareReport:
    out_dir: str
    documents: int
    tokens: int
    shards: list[tuple[str, int]]  # (file name, tokens), val first


def iter_text_files(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Files named directly, and text files (TEXT_SUFFIXES, not hidden) under named dirs, sorted."""
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path).parts
                if child.is_file() and child.suffix in TEXT_SUFFIXES and not any(p.startswith(".") for p in rel):
                    yield child
        elif path.is_file():
            yield path
        else:
            raise SweepctlError("no such file or directory", where=str(path), hint="check the path")


def iter_documents(path: Path) -> Iterator[str]:
    """A `.jsonl` file is one document per line (its "text" field); any other file is one document."""
    import json

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SweepctlError(f"not UTF-8 text (byte {e.start})", where=str(path),
                            hint="convert it to UTF-8 or leave it out") from None
    if path.suffix != ".jsonl":
        yield text
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)["text"]
        except (ValueError, KeyError, TypeError):
            raise SweepctlError('expected a JSON object with a "text" string', where=f"{path}:{lineno}",
                                hint="fix the line or pass the file as plain text (.txt)") from None
        yield str(doc)


def prepare_text(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    *,
    shard_tokens: int = 100_000_000,
    val_tokens: int | None = None,
    force: bool = False,
    on_file: Callable[[Path], None] | None = None,
) -> PrepareReport:
    """GPT-2-tokenize documents into shards like FineWeb's: every document starts with <|endoftext|>
    (as in nanoGPT's fineweb.py), the first `val_tokens` tokens (default 10%, at most one shard) go
    to `fineweb_val_000000.bin`, the rest to `fineweb_train_000001.bin`... of `shard_tokens` each.

    Tokens are held in memory (2 bytes each) so the val split is exact; meant for corpora of a few
    GB of text at most. FineWeb itself is downloaded, not prepared.
    """
    import numpy as np

    from sweepctl.pod.tokenizer import EOT_TOKEN, gpt2_encoding

    if shard_tokens < 1:
        raise SweepctlError(f"--shard-tokens must be at least 1, got {shard_tokens}")
    out = Path(out_dir)
    existing = sorted(out.glob("fineweb_*.bin")) if out.is_dir() else []
    if existing and not force:
        raise SweepctlError(f"{len(existing)} shard(s) already there (e.g. {existing[0].name})", where=str(out),
                            hint="choose an empty --out dir, or pass --force to replace them")

    enc = gpt2_encoding()
    chunks: list[Any] = []
    documents = 0
    for path in iter_text_files(inputs):
        if on_file:
            on_file(path)
        for doc in iter_documents(path):
            chunks.append(np.array([EOT_TOKEN, *enc.encode_ordinary(doc)], dtype=np.uint16))
            documents += 1
    if not documents:
        raise SweepctlError("no text files found in the inputs", hint=f"pass files or dirs with {', '.join(TEXT_SUFFIXES)}")
    stream = np.concatenate(chunks)
    n_val = min(shard_tokens, max(1, len(stream) // 10)) if val_tokens is None else val_tokens
    if not 0 < n_val < len(stream):
        raise SweepctlError(f"--val-tokens {n_val} leaves no train tokens (the text has {len(stream)} tokens)",
                            hint="use fewer val tokens or more text")

    out.mkdir(parents=True, exist_ok=True)
    for old in existing:  # --force: stale train shards from a bigger corpus must not stay behind
        old.unlink()
    shards = [(VAL_SHARD, write_shard(out / VAL_SHARD, stream[:n_val]))]
    for index, start in enumerate(range(n_val, len(stream), shard_tokens), 1):
        name = train_shard_name(index)
        shards.append((name, write_shard(out / name, stream[start:start + shard_tokens])))
    return PrepareReport(out_dir=str(out), documents=documents, tokens=len(stream), shards=shards)
