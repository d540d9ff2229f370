"""Fetching a release into the models folder with huggingface_hub, resumably.

huggingface_hub answers the hub's questions (file URL, size, sha256 / git hash, the download URL it
redirects to) and streams the bytes (`http_get`: Range requests, retries on a dropped connection
within one run, a progress bar). Its own hf_hub_download is not used: it deletes a cut download's
partial file, so a 15 GB download cut at 90 % would start over. Here the bytes go to
`FILE.<etag>.part` beside the final file, which a later run continues from (Range: bytes=N-); the
file is renamed into place only once its checksum matches the hub's (sha256 for LFS files, git's
blob sha1 for small ones). Plain HTTP always, also for Xet-backed files (the hub's download URL
serves them over HTTP too), so every download can be resumed the same way.

HF_ENDPOINT (e.g. https://hf-mirror.com) is read at each call and passed to huggingface_hub
explicitly (its own constant is read once, at import). Every failure is an AIWriterError.
huggingface_hub's telemetry is turned off: the only requests are the file's HEAD and GET.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from aiwriter.errors import AIWriterError
from aiwriter.hub.catalog import Release
from aiwriter.progress import progress

DEFAULT_ENDPOINT = "https://huggingface.co"
SPACE_MARGIN = 64 * 2**20       # free space left over after a download, at least
HASH_CHUNK = 4 * 2**20
PART = ".part"
NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def endpoint() -> str:
    """The hub to download from: $HF_ENDPOINT (a mirror), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def gb(n: int | float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


@dataclass(frozen=True)
class Remote:
    """One file on the hub, as its HEAD answer describes it."""
    url: str        # the file's URL at that commit: each GET (and retry) is redirected afresh by the hub
    size: int | None
    etag: str       # sha256 of an LFS file, git blob sha1 of a small one
    commit: str


# ---------------------------------------------------------------------------------- errors

def _hub_error(e: BaseException, what: str) -> AIWriterError:
    """An AIWriterError for whatever huggingface_hub / httpx raised while fetching `what`."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    where = endpoint()
    mirror_zh = "；在中国大陆可设 HF_ENDPOINT=https://hf-mirror.com 使用镜像" if where == DEFAULT_ENDPOINT else ""
    mirror_en = "; in mainland China, set HF_ENDPOINT=https://hf-mirror.com to use a mirror" if where == DEFAULT_ENDPOINT else ""
    if isinstance(e, OfflineModeIsEnabled):
        return AIWriterError(f"已设置离线模式（HF_HUB_OFFLINE），无法下载 {what}", f"offline mode is set (HF_HUB_OFFLINE): cannot download {what}")
    if isinstance(e, HfHubHTTPError) and e.response is not None:
        status = e.response.status_code
        if status == 404:
            return AIWriterError(f"{where} 上没有 {what}（可能已被作者删除或改名；请看来源页面）",
                                 f"{what} is not on {where} (removed or renamed upstream? see its source page)")
        if status in (401, 403):
            return AIWriterError(f"{where} 拒绝访问 {what}（HTTP {status}）", f"{where} refused access to {what} (HTTP {status})")
        return AIWriterError(f"{where} 返回错误 HTTP {status}（{what}），请稍后再试{mirror_zh}",
                             f"{where} answered HTTP {status} for {what}; try again later{mirror_en}")
    if isinstance(e, (httpx2.ConnectError, httpx2.TimeoutException, httpx2.NetworkError, httpx2.ProxyError)):
        return AIWriterError(f"连不上 {where}（{type(e).__name__}）：请检查网络或代理{mirror_zh}",
                             f"cannot reach {where} ({type(e).__name__}): check the network or proxy{mirror_en}")
    if isinstance(e, httpx2.HTTPError):
        return AIWriterError(f"下载 {what} 时网络出错（{type(e).__name__}: {e}）", f"network error while fetching {what} ({type(e).__name__}: {e})")
    return AIWriterError(f"无法从 {where} 取得 {what}（{type(e).__name__}: {e}）", f"cannot fetch {what} from {where} ({type(e).__name__}: {e})")


def _is_network_error(e: BaseException) -> bool:
    import httpx2
    from huggingface_hub.errors import FileMetadataError, HfHubHTTPError

    return isinstance(e, (httpx2.HTTPError, HfHubHTTPError, FileMetadataError, ConnectionError))


# ---------------------------------------------------------------------------------- the hub

def _no_telemetry() -> None:
    """Only the file's own requests: no usage details in the user agent and no extra request to
    the hub for huggingface_hub's agent registry (read by its header builder unless telemetry is off)."""
    from huggingface_hub import constants

    constants.HF_HUB_DISABLE_TELEMETRY = True


def _token(where: str):
    # the user's HF token (if any) goes to huggingface.co only, never to a mirror
    return None if where == DEFAULT_ENDPOINT else False


def remote_file(repo: str, filename: str, revision: str = "main") -> Remote:
    """HEAD the file on the hub (following its redirects that stay on the hub)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    _no_telemetry()
    where = endpoint()
    url = hf_hub_url(repo, filename, revision=revision, endpoint=where)
    try:
        meta = get_hf_file_metadata(url, token=_token(where), endpoint=where)
    except Exception as e:
        if _is_network_error(e):
            raise _hub_error(e, f"{repo}/{filename}") from None
        raise
    if not meta.etag or not meta.commit_hash:
        raise AIWriterError(f"{where} 的回答不像 Hugging Face（没有 ETag 或 X-Repo-Commit），请检查 HF_ENDPOINT",
                            f"{where} does not answer like a Hugging Face hub (no ETag or X-Repo-Commit); check HF_ENDPOINT")
    # GET the file at the commit the HEAD saw (the same bytes even if the branch moves on), through the
    # hub each time: a retry an hour into a big download gets a fresh signed CDN link, not an expired one
    pinned = hf_hub_url(repo, filename, revision=meta.commit_hash, endpoint=where)
    return Remote(url=pinned, size=meta.size, etag=meta.etag, commit=meta.commit_hash)


# ---------------------------------------------------------------------------------- local files

def part_path(dest: Path, etag: str) -> Path:
    return dest.with_name(f"{dest.name}.{etag[:16]}{PART}")


def partial_files(dest: Path) -> list[Path]:
    """Partial downloads of dest (any etag) in its folder."""
    if not dest.parent.is_dir():
        return []
    return sorted(p for p in dest.parent.glob(f"{dest.name}.*{PART}") if p.is_file())


def disk_usage(path: Path):  # a seam for tests: the preflight's view of the disk
    return shutil.disk_usage(path)


def _open_part(path: Path):  # a seam for tests: the file the bytes are written to
    return open(path, "ab")


def _existing(folder: Path) -> Path:
    """folder, or its nearest ancestor that exists (the disk it will be made on)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def check_space(folder: Path, need: int) -> None:
    free = disk_usage(folder).free
    if free < need + SPACE_MARGIN:
        raise AIWriterError(
            f"磁盘空间不够：还要下载 {gb(need)}，{folder} 所在磁盘只剩 {gb(free)}。请腾出空间，或用 --models-dir "
            f"（或环境变量 AIWRITER_MODELS）换到别的磁盘",
            f"not enough disk space: {gb(need)} still to download, {gb(free)} free on the disk of {folder}. Free some "
            f"space, or use --models-dir (or AIWRITER_MODELS) on another disk")


def file_digest(path: Path, kind: str, label: str) -> str:
    """sha256 of the file, or ("git") its git blob sha1, with a progress bar for big files."""
    size = path.stat().st_size
    h = hashlib.sha256() if kind == "sha256" else hashlib.sha1(b"blob %d\0" % size)
    bar = progress(total=size, desc=f"校验 / verifying {label}", unit="B", unit_scale=True, disable=size < 2**28)
    with open(path, "rb") as f, bar:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _checksum_kind(etag: str) -> str | None:
    hexa = all(c in "0123456789abcdef" for c in etag.lower())
    if hexa and len(etag) == 64:
        return "sha256"
    if hexa and len(etag) == 40:
        return "git"
    return None


def verify(path: Path, remote: Remote, label: str, known_sha256: str | None = None) -> None:
    """Raise (after deleting the file) unless its checksum matches the hub's. An ETag that is no
    checksum (some mirrors) falls back to the catalogue's sha256; with neither, say so."""
    kind, want = _checksum_kind(remote.etag), remote.etag.lower()
    if kind is None and known_sha256:
        kind, want = "sha256", known_sha256.lower()
    if kind is None:
        print(f"注意：{endpoint()} 没有给出 {label} 的校验和，只核对了大小 / note: {endpoint()} gave no checksum for "
              f"{label}; only its size was checked", file=sys.stderr)
        return
    got = file_digest(path, kind, label)
    if got != want:
        path.unlink(missing_ok=True)
        name = "SHA-256" if kind == "sha256" else "git SHA-1"
        raise AIWriterError(
            f"{label} 下载后校验失败（{name} 应为 {want}，实为 {got}），文件已删除。请重新运行同一命令；如果一再失败，"
            f"可能是镜像或网络代理改动了文件",
            f"{label} failed its checksum after download ({name} should be {want}, is {got}); the file was removed. "
            f"Run the same command again; if it keeps failing, a mirror or proxy may be altering the file")


def _bar(**kw):
    """huggingface_hub's progress bar hook -> the package's own (a bar on a terminal, lines elsewhere)."""
    kw.pop("name", None)
    desc = kw.pop("desc", "")
    return progress(desc=f"下载 / downloading {desc}", **kw)


# ---------------------------------------------------------------------------------- one file

def fetch(repo: str, filename: str, dest: Path, *, revision: str = "main", known_sha256: str | None = None,
          label: str | None = None, check_present: bool = False) -> bool:
    """Download repo/filename to dest (its folder created if needed), continuing a partial file
    left by an earlier run; verified before it is renamed into place. A dest already there is
    left alone (checked against the hub first with check_present). True when it was downloaded."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    label = label or filename
    if dest.is_file() and not check_present:
        return False
    remote = remote_file(repo, filename, revision)
    if dest.is_file():
        if remote.size is not None and dest.stat().st_size != remote.size:
            raise AIWriterError(f"{dest} 已存在，但与 {endpoint()} 上的文件大小不同；要重新下载请先删除它",
                                f"{dest} exists but differs in size from the file on {endpoint()}; delete it to download again")
        verify_existing(dest, remote, label, known_sha256)
        return False

    part = part_path(dest, remote.etag)
    for stale in partial_files(dest):  # a partial of an older version of the file cannot be continued
        if stale != part:
            stale.unlink(missing_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if remote.size is not None and have > remote.size:
        part.unlink()
        have = 0
    if remote.size is not None:
        check_space(_existing(dest.parent), remote.size - have)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if have:
        print(f"从 {gb(have)} 处继续下载 {label} / resuming {label} from {gb(have)}", file=sys.stderr, flush=True)

    where = endpoint()
    headers = build_hf_headers(token=_token(where))  # httpx drops the token on a redirect to another host
    f = None
    hf_log = logging.getLogger("huggingface_hub")
    level = hf_log.level
    hf_log.setLevel(logging.ERROR)  # its retry notices are English-only; our errors say what happened
    try:
        f = _open_part(part)
        _lock(f, part)
        http_get(remote.url, f, resume_size=have, headers=headers, expected_size=remote.size,
                 displayed_filename=label, tqdm_class=_bar)
        f.close()
    except AIWriterError:
        raise
    except Exception as e:
        _close_quietly(f)  # what was written stays for the next run
        kept = part.stat().st_size if part.is_file() else 0
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            raise AIWriterError(
                f"磁盘已满，下载中断：已下载的 {gb(kept)} 保存在 {part}。腾出空间后再运行同一命令即可接着下载",
                f"the disk is full; the download stopped. The {gb(kept)} already fetched are kept in {part}: free some "
                f"space and run the same command again to continue") from None
        if _is_network_error(e) or (isinstance(e, OSError) and e.errno is None):  # incl. a short body
            base = _hub_error(e, label)
            raise AIWriterError(f"{base.zh}。已下载的 {gb(kept)} 保存在 {part}，再运行同一命令即可接着下载",
                                f"{base.en}. The {gb(kept)} already fetched are kept in {part}; run the same command "
                                f"again to continue") from None
        if isinstance(e, OSError):
            raise AIWriterError(f"无法写入 {part}：{e.strerror or e}", f"cannot write {part}: {e.strerror or e}") from None
        raise
    finally:  # also on Ctrl+C: the partial file is closed (flushed) and kept
        _close_quietly(f)
        hf_log.setLevel(level)
    verify(part, remote, label, known_sha256)
    os.replace(part, dest)
    return True


def verify_existing(dest: Path, remote: Remote, label: str, known_sha256: str | None) -> None:
    """A file already in place: check it as a fresh download would be, but never delete it."""
    kind = _checksum_kind(remote.etag)
    want = remote.etag.lower() if kind else (known_sha256 or "").lower()
    kind = kind or ("sha256" if known_sha256 else None)
    if kind is None:
        return
    if file_digest(dest, kind, label) != want:
        raise AIWriterError(f"{dest} 已存在，但校验和与 {endpoint()} 上的文件不同；要重新下载请先删除它",
                            f"{dest} exists but its checksum differs from the file on {endpoint()}; delete it to download again")


def _lock(f, part: Path) -> None:
    """One download per partial file: a second `aiwriter download` of the same file is refused."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise AIWriterError(f"另一个 aiwriter download 正在下载 {part.name}", f"another aiwriter download is fetching {part.name}")


def _close_quietly(f) -> None:
    if f is None:
        return
    try:
        f.close()
    except OSError:  # a full disk fails the final flush too; what reached the file stays
        pass


# ---------------------------------------------------------------------------------- a release

@dataclass(frozen=True)
class Fetched:
    path: Path
    new: bool  # downloaded now (False: it was already there)


def download(release: Release, folder: Path, check_present: bool = False) -> list[Fetched]:
    """The release's model file (and its tokenizer, where the `rwkv` package lacks it) into folder."""
    dest = folder / release.filename
    out = [Fetched(dest, fetch(release.repo, release.filename, dest, revision=release.revision,
                               known_sha256=release.sha256, label=release.filename, check_present=check_present))]
    tok = release.tokenizer
    if tok is not None:
        dest = folder / tok.save_as
        # never re-checked: a 20B_tokenizer.json from ChatRWKV is as good and need not match this copy
        out.append(Fetched(dest, fetch(tok.repo, tok.filename, dest, label=f"{tok.save_as} ({tok.repo})")))
    return out
