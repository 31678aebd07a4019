"""The cycle's source stage: full documents fetched page by page, parsed and compressed.

``fetch_pages(client, chunks)`` yields one ``FetchedPage`` per chunk of NCT ids, in order:
the studies the registry returned, each already parsed into a ``TrialRecord`` (or the
reason it could not be) with its raw document compressed for storage, or the
``RegistryError`` that failed the whole page. Storing them is the caller's business
(``trialwatch.monitor.cycle.recording``), one transaction per page.

    for page in fetch_pages(client, chunks, worker=len(chunks) >= 3):
        if page.error: ...                     # nothing of this page is stored
        for study in page.studies: ...         # study.record / study.error, study.compressed_raw

With ``worker=True`` the pages are fetched and prepared in forked child processes while
the caller stores the pages before, so a first import uses every core instead of one
(parsing, hashing and compressing a page cost more than storing it). With the rate limit
off and two cores there are two children taking the pages in turn; otherwise one, which
continues the caller's rate limit (a limit cannot be shared between processes). Each child
has a ``clone()`` of the client (its own connections); its requests are counted in the
caller's ``requests_made`` as its pages arrive. Pages travel through pipes, so only about
one page per child waits in memory. If a child dies, the pages not delivered come back as
failed pages: they are retried at the next cycle, and nothing false is ever recorded.

``worker_pays_off`` says when the child is worth it (and safe): enough pages, a rate limit
fast enough that the fetch is not simply waiting for it, a fork-able platform and a caller
running a single thread (forking a threaded process can deadlock the child).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson
import structlog

from trialwatch.monitor.record import ParseError, TrialRecord
from trialwatch.monitor.sources.ctgov.client import (
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
)
from trialwatch.monitor.sources.ctgov.parser import parse_study
from trialwatch.storage.raw_codec import compress_raw, new_compressor

__all__ = ["FetchedPage", "PreparedStudy", "fetch_pages", "prepare_studies", "safe_to_fork",
           "worker_pays_off", "worth_a_worker"]

log = structlog.get_logger(__name__)

# A worker process is worth forking from this many pages on (a page of 100 documents costs
# ~0.1 s to prepare; the fork ~0.01 s) ...
FETCH_PAGE = 100  # studies per fetch request (the registry's page size)
WORKER_MIN_PAGES = 3
# ... when requests may go at least this fast: below it the fetch waits for the rate limit,
# and preparing a page fits in that wait anyway.
WORKER_MIN_RATE = 5.0


@dataclass(frozen=True)
class PreparedStudy:
    """One fetched document: its record and compressed raw form, or why it has no record."""

    record: TrialRecord | None
    compressed_raw: bytes = b""
    error: str | None = None  # the ParseError message


@dataclass(frozen=True)
class FetchedPage:
    """What one chunk of NCT ids gave: its prepared studies, or the error that failed it."""

    nct_ids: tuple[str, ...]
    studies: tuple[PreparedStudy, ...] = ()
    error: RegistryError | None = None
    requests: int = 0  # requests a worker made for it (counted into the caller's client)


def prepare_studies(documents: Iterable[dict[str, Any]]) -> list[PreparedStudy]:
    """Parse, hash and compress documents (pure: the same documents give the same result)."""
    compressor = new_compressor()
    prepared = []
    for document in documents:
        try:
            record = parse_study(document)
        except ParseError as exc:
            prepared.append(PreparedStudy(None, error=str(exc)))
            continue
        except Exception as exc:  # a parser bug: this document fails, not its whole page
            prepared.append(PreparedStudy(None, error=f"unexpected parser error: {exc!r}"))
            continue
        record.section_hashes  # noqa: B018 - computed here, in the worker when there is one
        prepared.append(PreparedStudy(record, compress_raw(orjson.dumps(document), compressor)))
    return prepared


def worker_pays_off(client: RegistryClient, pages: int) -> bool:
    """Whether ``fetch_pages(worker=True)`` is worth it, and safe, for this many pages."""
    return (worth_a_worker(pages, client.requests_per_second)
            and not client.has_custom_transport and safe_to_fork())


def worth_a_worker(pages: int, requests_per_second: float) -> bool:
    """Enough pages, and requests not so slow that preparing fits in the rate limit's waits."""
    fast = requests_per_second <= 0 or requests_per_second >= WORKER_MIN_RATE
    return pages >= WORKER_MIN_PAGES and fast


def safe_to_fork() -> bool:
    """A fork-able platform and a single thread (a forked threaded process can deadlock on
    a lock another thread held at the fork)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def fetch_pages(client: RegistryClient, chunks: Sequence[Sequence[str]], *, page_size: int,
                worker: bool = False) -> Iterator[FetchedPage]:
    """One ``FetchedPage`` per chunk, in order; with ``worker``, prepared in child processes
    (two when the rate is unlimited and there are two cores, else one: a rate limit cannot
    be shared between processes)."""
    if worker:
        two = client.requests_per_second <= 0 and (os.cpu_count() or 1) >= 2
        return _fetch_in_workers(client, chunks, page_size, 2 if two else 1)
    return (_fetch_page(client, chunk, page_size) for chunk in chunks)


def _fetch_page(client: RegistryClient, chunk: Sequence[str], page_size: int) -> FetchedPage:
    try:
        documents = list(client.iter_studies(chunk, page_size=page_size))
    except RegistryError as exc:
        return FetchedPage(tuple(chunk), error=exc)
    return FetchedPage(tuple(chunk), tuple(prepare_studies(documents)))


def _fetch_in_workers(client: RegistryClient, chunks: Sequence[Sequence[str]],
                      page_size: int, workers: int) -> Iterator[FetchedPage]:
    """Pages from ``workers`` forked children, which take the chunks in turn (child *k*
    every *k*-th one): read in turn, the pages come back in chunk order."""
    context = multiprocessing.get_context("fork")
    lanes: list[tuple[Connection, Any]] = []
    for lane in range(workers):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker_main, args=(client.clone(), chunks[lane::workers], page_size, sender),
            name=f"trialwatch-fetch-{lane}", daemon=True)
        process.start()
        sender.close()  # the child's end: EOF here once the child is gone
        lanes.append((receiver, process))
    delivered = 0
    try:
        for index in range(len(chunks)):
            receiver, _process = lanes[index % workers]
            try:
                page = receiver.recv()
            except EOFError:
                break
            client.note_requests_elsewhere(page.requests)
            delivered += 1
            yield page
    finally:
        for receiver, _process in lanes:
            receiver.close()
        for _receiver, process in lanes:
            process.join(timeout=5)
            if process.is_alive():  # the caller stopped early: its pages are not wanted
                process.kill()
                process.join()
    if delivered < len(chunks):
        dead = lanes[delivered % workers][1]
        log.error("fetch.worker_died", exitcode=dead.exitcode, pages=len(chunks),
                  delivered=delivered)
        failure = RegistryUnavailable(
            f"fetch worker process stopped (exit code {dead.exitcode}) before this page")
        for chunk in chunks[delivered:]:
            yield FetchedPage(tuple(chunk), error=failure)


def _worker_main(client: RegistryClient, chunks: Sequence[Sequence[str]], page_size: int,
                 sender: Connection) -> None:
    """The forked child: fetch and prepare every chunk, send each page as it is ready.

    Its garbage is a page of acyclic JSON, freed by reference counting; the automatic
    collector, triggered every few hundred allocations, cost a quarter of its CPU. So it
    is off, and one collection per page catches whatever cycles there are (the heap it
    was forked with is frozen: a collection walks only the page's objects)."""
    gc.disable()
    try:
        with client:
            for chunk in chunks:
                before = client.requests_made
                page = _fetch_page(client, chunk, page_size)
                sender.send(FetchedPage(page.nct_ids, page.studies, page.error,
                                        requests=client.requests_made - before))
                del page
                gc.collect()
    except BrokenPipeError:  # the caller stopped reading
        pass
    finally:
        sender.close()
