"""Exercise 3-1: a code review of a junior's product updater, in which every claim is demonstrated.

The code under review is ``junior/product_updater.py``, kept verbatim so that line numbers are
stable. This module holds three things:

* the review as data: one ``Finding`` per problem (category, severity, blocking or not and its
  Conventional Comments label, the lines it cites, the problem, why it matters, the fix, the
  ruff rules it covers, its evidence: the test in ``tests/test_code_review.py`` that shows the
  defect on the junior code and the fix in the improved one, or the word "judgement" where no
  test can decide; and ``patch``, the smallest fix in the junior's own code, which the tests
  apply to a copy of the junior file to check that the demonstration then fails), and
  ``PRAISE`` for what the junior did well;
* rendering as text, Markdown (for a pull request) or JSON (for a tool): the verdict first, then
  the blocking findings by risk, each with its small fix as a diff, then the others; the cited
  lines are read from the junior file at run time, so a citation that drifts fails loudly;
* the improved implementation: ``UpdateRequest`` (validated on construction), ``ProductUpdater``
  (a few worker threads on the pipeline's shared ``DummyJsonClient``, whose ``RequestPacer``
  keeps every request within DummyJSON's 100 per 10 s; one product's updates in file order; a
  write reported updated only when the API answers 200/201 with the product as written, never
  after a redirect), ``UpdateResult`` per item and ``UpdateSummary``.

Run::

    python code_review.py                       # the review (offline), as text
    python code_review.py --format markdown     # or json
    python code_review.py --apply updates.json --api-url http://127.0.0.1:8000 \
        [--concurrency 4] [--rate-limit 9]

``updates.json`` is a JSON array of ``{"id", "title", "price", "description"}`` objects. Exit
codes: 0 every update succeeded (or the review was printed), 1 some updates failed, 2 bad usage
or an unreadable updates file. DummyJSON answers updates but does not persist them.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import itertools
import json
import logging
import re
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from etl.client import DummyJsonClient
from etl.errors import ConfigError, PipelineError, UnexpectedPayload, excerpt
from etl.fields import is_int
from etl.settings import DEFAULT_RATE_LIMIT, configure_logging, resolve_settings

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent
JUNIOR_NAME = "junior/product_updater.py"
JUNIOR_PATH = ROOT / JUNIOR_NAME
TESTS = "tests/test_code_review.py"
FORMATS = ("text", "markdown", "json")
NOT_PERSISTED = (
    "DummyJSON does not persist writes: it answers each PUT with the updated product but keeps "
    "its catalog unchanged, so a later GET returns the old values."
)

Category = Literal["security", "correctness", "performance", "maintainability"]
Severity = Literal["critical", "high", "medium", "low"]
# Conventional Comments labels (https://conventionalcomments.org/); a finding is one of these,
# decorated "(blocking)" or "(non-blocking)". What the junior did well is a separate "praise".
Label = Literal["issue", "suggestion", "nitpick", "question"]
CATEGORIES: tuple[Category, ...] = ("security", "correctness", "performance", "maintainability")
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low")
LABELS: tuple[Label, ...] = ("issue", "suggestion", "nitpick", "question")


# --- the review: findings as data -------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """Replace junior lines ``first``..``last`` (which must hold ``anchor``) with ``new``."""

    first: int
    last: int
    anchor: str
    new: tuple[str, ...]


@dataclass(frozen=True)
class Finding:
    """One problem in the junior code: where, what, why it matters, the fix, and the evidence.

    ``patch`` is the smallest fix in the junior's own code (the pull request a mentor would ask
    for first). It is shown as a diff for a blocking finding, and the tests apply it to a copy of
    the junior file to check that the finding's demonstration then fails.
    """

    id: str
    category: Category
    severity: Severity
    blocking: bool
    label: Label
    title: str
    lines: tuple[int, int]  # first and last line cited in junior/product_updater.py
    anchor: str  # text the cited lines must contain, so a drifted citation is caught
    problem: str
    why: str
    fix: str
    evidence: str  # "test: tests/test_code_review.py::<name>" or "judgement"
    rules: tuple[str, ...] = ()  # the ruff rule codes this finding accounts for
    patch: tuple[Edit, ...] = ()

    @property
    def is_fact(self) -> bool:
        """True when a test demonstrates the finding; False for a judgement."""
        return self.evidence.startswith("test: ")

    @property
    def test_name(self) -> str | None:
        """The name of the demonstrating test function, or None for a judgement."""
        return self.evidence.rpartition("::")[2] if self.is_fact else None

    @property
    def where(self) -> str:
        """``line 7`` or ``lines 37-40``."""
        first, last = self.lines
        return f"line {first}" if first == last else f"lines {first}-{last}"

    @property
    def comment_label(self) -> str:
        """The Conventional Comments label: ``issue (blocking)``, ``nitpick (non-blocking)``."""
        return f"{self.label} ({'blocking' if self.blocking else 'non-blocking'})"


@dataclass(frozen=True)
class Praise:
    """Something the junior did well, with the lines that show it."""

    lines: tuple[int, int]
    anchor: str
    text: str

    @property
    def where(self) -> str:
        """``line 7`` or ``lines 37-40``."""
        first, last = self.lines
        return f"line {first}" if first == last else f"lines {first}-{last}"


def _test(name: str) -> str:
    return f"test: {TESTS}::{name}"


JUDGEMENT = "judgement"
PUT_LINE = "                r = requests.put(url, data=json.dumps(data), headers=headers"

# In order of risk: ordered_findings() keeps this order within blocking and non-blocking.
FINDINGS: tuple[Finding, ...] = (
    Finding(
        id="SEC-1",
        category="security",
        severity="critical",
        blocking=True,
        label="issue",
        title="A live token is hard-coded and sent with every request",
        lines=(7, 7),
        anchor='API_TOKEN = "sk_live_',
        problem="A live API token is hard-coded in the module and sent as an Authorization "
        "header with every request, to whatever base URL the updater was given.",
        why="Everyone who can read the repository, a clone, a fork or its history holds the "
        "credential, and deleting the line does not take it back: it stays in every commit "
        "that had it. A test or a mistyped host receives it too.",
        fix="Revoke and rotate it now, purge it from history (git filter-repo, then every clone "
        "re-cloned), add secret scanning (a pre-commit hook and the host's push protection). "
        "Then send no credential: DummyJSON's product routes need none. Where an API does, "
        "read it from the environment through the settings, never commit it, never log it.",
        evidence=_test(
            "test_junior_hard_codes_a_token_and_sends_it_while_improved_sends_no_credential"
        ),
        rules=("S105",),
        patch=(
            Edit(1, 1, "import requests", ("import os", "import requests")),
            Edit(7, 7, "API_TOKEN = ", ('API_TOKEN = os.environ.get("DUMMYJSON_TOKEN", "")',)),
            Edit(
                29,
                29,
                '"Authorization": "Bearer " + self.token}',
                (
                    '        headers = {"Content-Type": "application/json"}',
                    "        if self.token:",
                    '            headers["Authorization"] = "Bearer " + self.token',
                ),
            ),
        ),
    ),
    Finding(
        id="SEC-3",
        category="security",
        severity="high",
        blocking=True,
        label="issue",
        title="The file's id chooses the endpoint that receives the token",
        lines=(28, 28),
        anchor='url = self.base_url + "/products/" + str(id)',
        problem="The id from the updates file is pasted into the URL as it is, so the file "
        "chooses the endpoint: an id of '../users/1' sends an authenticated PUT to /users/1.",
        why="Whoever can write the updates file (an export, a spreadsheet, another team's job) "
        "can make this job send its live token and a write of their choosing to any route of "
        "the API: the HTTP client resolves the dot segments before the request leaves.",
        fix="Accept only a positive integer id and build the path from it (or quote it with "
        "safe=''); the improved UpdateRequest rejects anything else before any request.",
        evidence=_test("test_junior_lets_the_file_choose_the_endpoint_that_gets_the_token"),
        patch=(
            Edit(
                28,
                28,
                'url = self.base_url + "/products/"',
                (
                    "        if isinstance(id, bool) or not isinstance(id, int) or id < 1:",
                    '            raise ValueError("not a product id: %r" % (id,))',
                    '        url = self.base_url + "/products/" + str(id)',
                ),
            ),
        ),
    ),
    Finding(
        id="SEC-2",
        category="security",
        severity="high",
        blocking=True,
        label="issue",
        title="Failed attempts print the token, the payload and the response",
        lines=(38, 40),
        anchor='print("Request headers: "',
        problem="Every failed attempt prints the request headers (bearer token included), the "
        "whole payload and the whole response body to stdout.",
        why="stdout ends up in CI logs, cron mail and log shippers: the token leaks to everyone "
        "who reads them, and whatever the payload holds is copied there three times per "
        "failure. No linter sees this.",
        fix="Log one line per failure: product id, status and a truncated excerpt of the "
        "server's message (what ApiError carries); never headers, never payloads.",
        evidence=_test(
            "test_junior_prints_token_payload_and_response_on_errors_while_improved_logs_neither"
        ),
        patch=(Edit(38, 40, 'print("Request headers: "', ()),),
    ),
    Finding(
        id="COR-10",
        category="correctness",
        severity="high",
        blocking=True,
        label="issue",
        title="A redirected PUT is reported as updated",
        lines=(33, 35),
        anchor="if r.status_code == 200:",
        problem="requests.put follows redirects and any final 200 counts as success: a 303 or "
        "302 turns the PUT into a GET, a 301 re-sends it without its body, and the product "
        "that comes back is printed as updated.",
        why="A false success: the update never reached the API, yet the output says 'Updated "
        "product 1' with the old title, and nobody re-runs it. A 307 or 308 re-sends the "
        "payload to wherever the Location points.",
        fix="Never follow redirects on a write (allow_redirects=False): a 3xx is a failure with "
        "its reason, and so is an answer that is not the product just written.",
        evidence=_test("test_a_redirected_put_is_reported_updated_by_the_junior_only"),
        patch=(Edit(33, 33, "requests.put(url", (f"{PUT_LINE}, allow_redirects=False)",)),),
    ),
    Finding(
        id="COR-1",
        category="correctness",
        severity="high",
        blocking=True,
        label="issue",
        title="No timeout: one stalled connection hangs the batch",
        lines=(33, 33),
        anchor="requests.put(url",
        problem="requests.put is called without a timeout.",
        why="requests then waits forever: one stalled connection (a proxy or load balancer that "
        "accepted and went silent) hangs the whole batch, the retry loop never runs, and a "
        "scheduled job piles up overlapping runs.",
        fix="Explicit (connect, read) timeouts on every request, as DummyJsonClient has (5 s and "
        "30 s by default, HTTP_CONNECT_TIMEOUT / HTTP_READ_TIMEOUT), and a failed result for "
        "the item when they expire.",
        evidence=_test(
            "test_junior_hangs_on_a_stalled_server_while_improved_gives_up_after_its_timeout"
        ),
        rules=("S113",),
        patch=(Edit(33, 33, "requests.put(url", (f"{PUT_LINE}, timeout=(5, 30))",)),),
    ),
    Finding(
        id="COR-9",
        category="correctness",
        severity="medium",
        blocking=True,
        label="issue",
        title="An unreadable file is swallowed and the script exits 0",
        lines=(16, 18),
        anchor="except:",
        problem="A missing or malformed updates file is swallowed by a bare `except:` that "
        "returns [], and the script exits 0 even when no update went through.",
        why="A scheduler sees success when nothing was updated; a bare except also swallows "
        "KeyboardInterrupt; the file is opened without a context manager or an encoding.",
        fix="Read the file with Path.read_text(encoding='utf-8'), report an unreadable or "
        "malformed file in one line naming it and exit 2; exit 1 when any update failed.",
        evidence=_test("test_junior_swallows_a_malformed_file_and_exits_0_while_improved_exits_2"),
        rules=("E722", "SIM115", "PTH123", "TRY300"),
        patch=(
            Edit(
                16,
                18,
                "except:",
                (
                    "    except (OSError, ValueError) as e:",
                    '        print("Could not read %s: %s" % (filename, e), file=sys.stderr)',
                    "        sys.exit(2)",
                ),
            ),
        ),
    ),
    Finding(
        id="COR-2",
        category="correctness",
        severity="medium",
        blocking=True,
        label="issue",
        title="Every failure, bugs included, becomes None",
        lines=(41, 45),
        anchor="except Exception as e:",
        problem="Every failure (an HTTP error, a timeout, a bug in this very code) is caught by "
        "`except Exception`, printed, and turned into `return None`.",
        why="The caller gets None for a missing product, an outage and a TypeError alike, so it "
        "cannot tell what failed or why, nor decide what to retry; update_products returns "
        "only the successes, so failures vanish from its result.",
        fix="Return an UpdateResult per item (ok, or failed with the API's reason), catch only "
        "the pipeline's own errors (ApiError, UnexpectedPayload) and let programming errors "
        "raise.",
        evidence=_test(
            "test_junior_returns_none_for_every_failure_while_improved_returns_the_reason"
        ),
        rules=("BLE001",),
        patch=(
            Edit(
                41,
                41,
                "except Exception as e:",
                ("            except requests.RequestException as e:",),
            ),
        ),
    ),
    Finding(
        id="COR-11",
        category="correctness",
        severity="medium",
        blocking=True,
        label="issue",
        title="An unexpected 200 answer aborts the batch",
        lines=(34, 35),
        anchor="return r.json()",
        problem="Whatever a 200 carries is returned as the updated product, unchecked: an answer "
        'without a title (a gateway\'s {"message": "accepted"}) raises KeyError at line 54.',
        why="The KeyError escapes update_products: the rest of the batch is abandoned after the "
        "first odd answer, the results so far are lost, and the traceback points at a print.",
        fix="Accept an answer only if it is the product written (an object with the id sent); "
        "anything else is a failed result for that item and the batch goes on.",
        evidence=_test("test_an_odd_200_answer_aborts_the_junior_batch_but_not_the_improved_one"),
        patch=(
            Edit(
                35,
                35,
                "return r.json()",
                (
                    "                    product = r.json()",
                    '                    if isinstance(product, dict) and product.get("id") == id:',
                    "                        return product",
                    '                    print("Unexpected answer for product " + str(id))',
                ),
            ),
        ),
    ),
    Finding(
        id="COR-6",
        category="correctness",
        severity="medium",
        blocking=True,
        label="issue",
        title="An item missing a field aborts the batch",
        lines=(50, 50),
        anchor='u["title"], u["price"], u["description"]',
        problem="An item without a title, price or description raises KeyError out of "
        "update_products.",
        why="The rest of the batch is abandoned half-way, the results gathered so far are lost "
        "with the exception, and nothing says which item was bad.",
        fix="Validate every item first; an invalid one becomes a failed result with its reason "
        "and the others still run.",
        evidence=_test(
            "test_an_item_missing_a_field_aborts_the_junior_batch_but_not_the_improved_one"
        ),
        patch=(
            Edit(
                50,
                50,
                "result = self.update_product(",
                (
                    '            if not all(k in u for k in ("title", "price", "description")):',
                    '                print("Skipping product " + str(id) + ": a field is missing")',
                    "                continue",
                    '            result = self.update_product(id, u["title"], u["price"], '
                    'u["description"])',
                ),
            ),
        ),
    ),
    Finding(
        id="COR-5",
        category="correctness",
        severity="medium",
        blocking=False,
        label="suggestion",
        title="Nothing is validated before it is sent",
        lines=(27, 30),
        anchor='data = {"title": title, "price": price',
        problem="Nothing is validated: a negative or zero price, an empty title, a price given "
        "as text, a non-positive id or a 10,000-character description go straight out.",
        why="The server is the authority on what a product may hold, but DummyJSON, like many "
        "APIs, answers 200 to a PUT with price -5: bad data is written and reported as "
        "updated, and the error surfaces later, far from the input that caused it.",
        fix="Parse each item into a frozen UpdateRequest that rejects a non-positive id or "
        "price, more than two decimals, an empty title or an over-long description, with a "
        "message naming the field, before any request is sent.",
        evidence=_test(
            "test_junior_sends_an_invalid_price_while_improved_rejects_it_before_sending"
        ),
        patch=(
            Edit(
                30,
                30,
                'data = {"title": title',
                (
                    "        if not str(title).strip() or not isinstance(price, (int, float)) "
                    "or price <= 0:",
                    '            raise ValueError("invalid update for product %s" % id)',
                    '        data = {"title": title, "price": price, "description": description}',
                ),
            ),
        ),
    ),
    Finding(
        id="COR-4",
        category="correctness",
        severity="medium",
        blocking=False,
        label="suggestion",
        title="Retry-After is ignored",
        lines=(43, 44),
        anchor="time.sleep(2)",
        problem="After a 429 it waits a fixed 2 s and never reads Retry-After.",
        why="DummyJSON answers 429 with Retry-After: 10 (100 requests per 10 s): three attempts "
        "2 s apart all land inside the blocked window, so the update is lost while the log "
        "says it was retried. No linter sees retry semantics.",
        fix="Honour Retry-After (urllib3 Retry with respect_retry_after_header inside "
        "DummyJsonClient, whose PacedRetry turns the wait into a pause of the client's "
        "RequestPacer, so every worker waits, not only the one told), and stay under the limit "
        "in the first place: the pacer spaces the requests of all workers to "
        f"{DEFAULT_RATE_LIMIT:g} a second by default (--rate-limit / RATE_LIMIT).",
        evidence=_test("test_junior_ignores_retry_after_while_improved_waits_as_the_server_asks"),
        patch=(
            Edit(
                31,
                32,
                "for i in range(3):",
                ("        for i in range(3):", "            wait = 2", "            try:"),
            ),
            Edit(
                36,
                36,
                "else:",
                (
                    "                else:",
                    '                    wait = float(r.headers.get("Retry-After", wait))',
                ),
            ),
            Edit(
                43,
                44,
                "time.sleep(2)",
                (
                    '            print("Retrying in %s seconds..." % wait)',
                    "            time.sleep(wait)",
                ),
            ),
        ),
    ),
    Finding(
        id="COR-7",
        category="correctness",
        severity="medium",
        blocking=False,
        label="suggestion",
        title="The caller's items lose their ids",
        lines=(49, 49),
        anchor='id = u.pop("id")',
        problem="It pops 'id' out of the caller's dictionaries.",
        why="Running the same batch again (the normal recovery after a crash, and safe because "
        "PUT is idempotent) fails with KeyError: 'id', because the first run destroyed its "
        "input. A rerun must send the same requests and reach the same state. The script "
        "reads the file afresh each run, so only a caller that keeps the list is hit.",
        fix="Treat input as read-only: build a new UpdateRequest from each item; the improved "
        "updater sends identical PUTs on a rerun and leaves the items as they were.",
        evidence=_test(
            "test_rerunning_a_batch_crashes_the_junior_while_improved_repeats_the_same_requests"
        ),
        patch=(Edit(49, 49, 'id = u.pop("id")', ('            id = u["id"]',)),),
    ),
    Finding(
        id="COR-8",
        category="correctness",
        severity="medium",
        blocking=False,
        label="suggestion",
        title="Results leak between calls through a mutable default",
        lines=(47, 47),
        anchor="results=[]",
        problem="The default `results=[]` is created once, when the class is defined, and shared "
        "by every call.",
        why="A second batch, even on a new ProductUpdater, returns the first batch's results as "
        "well: counts are wrong, and products look updated that this run never touched. The "
        "script calls it once per process, so a library caller is the one hit.",
        fix="Build the result list inside the call; the improved update_many returns a new list "
        "every time.",
        evidence=_test(
            "test_junior_results_leak_between_calls_via_a_mutable_default_but_not_improved"
        ),
        rules=("B006",),
        patch=(
            Edit(
                47,
                47,
                "results=[]",
                (
                    "    def update_products(self, updates, results=None):",
                    "        if results is None:",
                    "            results = []",
                ),
            ),
        ),
    ),
    Finding(
        id="COR-3",
        category="correctness",
        severity="low",
        blocking=False,
        label="suggestion",
        title="Client errors are retried",
        lines=(31, 36),
        anchor="if r.status_code == 200:",
        problem="Any status but 200 is sent again, three attempts in all, including 400 and 404, "
        "which can never succeed; the attempt counter `i` is unused, so there is no backoff.",
        why="Three requests and 6 s of sleep per bad item, the rate-limit quota spent on "
        "requests known to fail, and no distinction between a permanent error and a "
        "transient one (429, 5xx, a reset connection).",
        fix="Retry only connection errors, 429 and 5xx, with exponential backoff and jitter "
        "(urllib3 Retry inside DummyJsonClient); fail a 4xx at once with the server's message.",
        evidence=_test(
            "test_junior_retries_a_client_error_while_improved_fails_once_with_the_message"
        ),
        rules=("B007", "PLR2004"),
        patch=(
            Edit(
                36,
                36,
                "else:",
                (
                    "                elif 400 <= r.status_code < 500 and r.status_code != 429:",
                    '                    print("Product %s refused: %s" % (id, r.status_code))',
                    "                    return None",
                    "                else:",
                ),
            ),
        ),
    ),
    Finding(
        id="COR-12",
        category="correctness",
        severity="low",
        blocking=False,
        label="suggestion",
        title="A file that is not an array ends in a traceback",
        lines=(13, 15),
        anchor="updates = json.load(f)",
        problem="The file's shape is never checked: one update written as an object instead of "
        "an array of one is iterated key by key and ends in AttributeError: 'str' object has "
        "no attribute 'pop'.",
        why="A traceback that names neither the file nor what was expected, for the most "
        "likely mistake in a hand-written updates file.",
        fix="Check that the document is a JSON array and report anything else in one line "
        "naming the file (exit 2), as load_updates does.",
        evidence=_test("test_one_update_not_in_an_array_crashes_the_junior_but_not_the_improved"),
        patch=(
            Edit(
                15,
                15,
                "return updates",
                (
                    "        if not isinstance(updates, list):",
                    '            raise ValueError(filename + " must hold a JSON array of updates")',
                    "        return updates",
                ),
            ),
        ),
    ),
    Finding(
        id="PERF-2",
        category="performance",
        severity="medium",
        blocking=False,
        label="suggestion",
        title="Serial, with a fixed sleep after each update",
        lines=(56, 57),
        anchor="time.sleep(0.5)",
        problem="Updates go one at a time, with a fixed 0.5 s sleep after each.",
        why="A batch takes n x (latency + 0.5 s): 1,000 updates spend over 8 minutes asleep. "
        "The sleep is no rate limit either: it caps the client at 20 requests per 10 s where "
        "DummyJSON allows 100, yet does nothing to space out retries.",
        fix="A few worker threads (4 by default) sharing the client's RequestPacer, which spaces "
        f"their requests to at most {DEFAULT_RATE_LIMIT:g} a second by default (--rate-limit / "
        "RATE_LIMIT; DummyJSON allows 100 per 10 s) and pauses every worker when the server "
        "sends Retry-After: as fast as the API allows and never faster. The first small step: "
        "drop the fixed sleep and let Retry-After pace.",
        evidence=_test(
            "test_junior_runs_serially_with_sleeps_while_improved_runs_concurrently_in_limit"
        ),
        patch=(Edit(56, 57, "time.sleep(0.5)", ()),),
    ),
    Finding(
        id="PERF-1",
        category="performance",
        severity="low",
        blocking=False,
        label="suggestion",
        title="A new connection per request",
        lines=(33, 33),
        anchor="requests.put(",
        problem="The module-level requests.put opens a new connection for every request: no "
        "Session, no pool.",
        why="A TCP handshake (and against https://dummyjson.com a TLS one) per update: extra "
        "round trips each time, more load on the server, and ephemeral ports used up on large "
        "batches.",
        fix="One requests.Session with a pooled adapter (DummyJsonClient), shared by the "
        "workers: as many connections as workers, each reused.",
        evidence=_test("test_junior_opens_a_connection_per_request_while_improved_reuses_a_few"),
        patch=(
            Edit(
                25,
                25,
                "self.token = token",
                ("        self.token = token", "        self.session = requests.Session()"),
            ),
            Edit(
                33,
                33,
                "requests.put(url",
                (
                    "                r = self.session.put("
                    "url, data=json.dumps(data), headers=headers)",
                ),
            ),
        ),
    ),
    Finding(
        id="MNT-1",
        category="maintainability",
        severity="medium",
        blocking=False,
        label="suggestion",
        title="One method does everything",
        lines=(27, 33),
        anchor="def update_product(self, id, title, price, description):",
        problem="URL building, credentials, payload, retry policy and the HTTP call sit in one "
        "method; parsing, pacing and reporting in another; there is no type for an update.",
        why="No part can be tested, reused or changed alone: the retry policy cannot be tested "
        "without a server, the missing validation has no place to live, and a second endpoint "
        "would copy the loop.",
        fix="Layers: UpdateRequest (what a valid update is), DummyJsonClient (HTTP, timeouts, "
        "retries, pacing), ProductUpdater (concurrency and per-item results), main() (files, "
        "output, exit code).",
        evidence=JUDGEMENT,
    ),
    Finding(
        id="MNT-2",
        category="maintainability",
        severity="low",
        blocking=False,
        label="question",
        title="Settings are constants in the code",
        lines=(23, 23),
        anchor="base_url=BASE_URL",
        problem="Which environments must this run against? The base URL, the retry count (3), "
        "the retry delay (2 s) and the pacing (0.5 s) are constants in the code, and the base "
        "URL default is bound once, at import.",
        why="Pointing the job at a staging API or tuning it for a slower one takes a code "
        "change; the only override is a constructor argument the script itself never passes.",
        fix="Settings resolved once from flag > environment > .env > default (resolve_settings): "
        "--api-url / API_BASE_URL, HTTP_*_TIMEOUT, HTTP_MAX_RETRIES, --concurrency, "
        "--rate-limit.",
        evidence=JUDGEMENT,
    ),
    Finding(
        id="MNT-3",
        category="maintainability",
        severity="low",
        blocking=False,
        label="suggestion",
        title="print instead of logging and exit codes",
        lines=(51, 55),
        anchor='print("Failed to update product "',
        problem="Progress, errors and the summary all go to stdout through print.",
        why="No levels or timestamps, no way to silence progress or send errors to stderr, and "
        "a caller that pipes the output gets both mixed; the exit code says nothing.",
        fix="logging for progress and per-item failures (stderr), the per-item results and the "
        "summary on stdout, and an exit code for machines.",
        evidence=JUDGEMENT,
        rules=("T201",),
    ),
    Finding(
        id="MNT-4",
        category="maintainability",
        severity="low",
        blocking=False,
        label="nitpick",
        title="No type hints or docstrings",
        lines=(21, 23),
        anchor="class ProductUpdater:",
        problem="No type hints and no docstrings anywhere, module included (ruff also asks for a "
        "copyright header; this repository's modules open with a docstring instead).",
        why="What id, price and the return value may be is left to guesswork; mypy cannot "
        "check a caller, and a reader must run the code to learn what it returns on failure.",
        fix="Full annotations checked by mypy --strict, a module docstring saying what the "
        "module does and how to run it, and one-line docstrings on public functions.",
        evidence=JUDGEMENT,
        rules=("ANN001", "ANN201", "ANN204", "D100", "D101", "D102", "D103", "D107", "CPY001"),
    ),
    Finding(
        id="MNT-5",
        category="maintainability",
        severity="low",
        blocking=False,
        label="nitpick",
        title="Style that hides intent",
        lines=(49, 51),
        anchor="if result == None:",
        problem="Style that hides intent: `id` shadows the builtin, `== None` instead of `is "
        "None`, %-formatting beside string concatenation, `else` after `return`, unsorted "
        "imports.",
        why="Each is small; together they slow every reader down, and `== None` runs a custom "
        "__eq__ where `is None` cannot be fooled.",
        fix="ruff check and ruff format with this repository's rules, which the improved code "
        "passes along with mypy --strict.",
        evidence=JUDGEMENT,
        rules=("A001", "A002", "E711", "UP031", "RET505", "I001"),
    ),
)

PRAISE: tuple[Praise, ...] = (
    Praise(
        (48, 50),
        "for u in updates:",
        "One update after another, in file order: two updates of the same product land in "
        "that order and the last one wins. The first version of the rewrite lost this when it "
        "went concurrent; update_many now keeps each product's updates in file order.",
    ),
    Praise(
        (31, 33),
        "for i in range(3):",
        "Failures are retried, and the request retried is a PUT, which is idempotent, so "
        "sending it again is safe; the comment at line 56 shows the right instinct about not "
        "hammering the API.",
    ),
    Praise(
        (23, 25),
        "def __init__(self, base_url=BASE_URL, token=API_TOKEN):",
        "The base URL is a constructor parameter, so the updater can be pointed at a test "
        "server: every demonstration in this review runs it that way, unchanged.",
    ),
)


def ordered_findings(findings: Iterable[Finding] = FINDINGS) -> list[Finding]:
    """Blocking first, most severe first, and otherwise in the order of risk they are listed."""
    return sorted(findings, key=lambda f: (not f.blocking, SEVERITIES.index(f.severity)))


def covered_rules(findings: Iterable[Finding] = FINDINGS) -> set[str]:
    """Every ruff rule code some finding accounts for."""
    return {rule for finding in findings for rule in finding.rules}


def patched_junior(finding: Finding, source: str | None = None) -> str:
    """The junior file with ``finding.patch`` applied; ``StaleFinding`` if an edit drifted."""
    lines = (JUNIOR_PATH.read_text(encoding="utf-8") if source is None else source).splitlines()
    edits = sorted(finding.patch, key=lambda edit: edit.first)
    for before, after in itertools.pairwise(edits):
        if after.first <= before.last:
            raise StaleFinding(
                f"{finding.id}: edits at lines {before.first} and {after.first} overlap"
            )
    for edit in reversed(edits):  # bottom up, so earlier line numbers stay valid
        if not 1 <= edit.first <= edit.last <= len(lines) or not any(
            edit.anchor in line for line in lines[edit.first - 1 : edit.last]
        ):
            raise StaleFinding(
                f"{finding.id}: lines {edit.first}-{edit.last} of {JUNIOR_NAME} no longer "
                f"contain {edit.anchor!r}"
            )
        lines[edit.first - 1 : edit.last] = edit.new
    return "\n".join(lines) + "\n"


def fix_diff(finding: Finding) -> list[str]:
    """The finding's small fix as a unified diff of the junior file, secrets masked."""
    if not finding.patch:
        return []
    before = junior_lines()
    after = patched_junior(finding).splitlines()
    diff = difflib.unified_diff(
        before, after, f"a/{JUNIOR_NAME}", f"b/{JUNIOR_NAME}", n=1, lineterm=""
    )
    return [redact(line) for line in diff]


def changed_lines(diff: Sequence[str]) -> int:
    """How many lines a unified diff removes or adds."""
    return sum(1 for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---")))


# --- rendering --------------------------------------------------------------------------------


class StaleFinding(Exception):
    """A finding's cited lines no longer hold its anchor: the junior file changed under it."""


_TOKEN = re.compile(r"\b(sk_(?:live|test)_)\w+")


def redact(text: str) -> str:
    """Mask anything shaped like a live or test key, so the review never repeats a secret."""
    return _TOKEN.sub(r"\1<redacted>", text)


def junior_lines() -> list[str]:
    """The junior file, line by line, read now (so the review quotes what is really there)."""
    return JUNIOR_PATH.read_text(encoding="utf-8").splitlines()


def quote(finding: Finding, lines: Sequence[str]) -> list[tuple[int, str]]:
    """The cited lines as (number, text), secrets masked; ``StaleFinding`` if they drifted."""
    return _cited(finding.id, finding.lines, finding.anchor, lines)


def _cited(
    name: str, span: tuple[int, int], anchor: str, lines: Sequence[str]
) -> list[tuple[int, str]]:
    first, last = span
    where = f"line {first}" if first == last else f"lines {first}-{last}"
    if not 1 <= first <= last <= len(lines):
        raise StaleFinding(f"{name}: {where} is outside {JUNIOR_NAME}")
    cited = lines[first - 1 : last]
    if not any(anchor in line for line in cited):
        raise StaleFinding(f"{name}: {where} of {JUNIOR_NAME} no longer contain {anchor!r}")
    return [(number, redact(text)) for number, text in enumerate(cited, first)]


def quote_praise(praise: Praise, lines: Sequence[str]) -> list[tuple[int, str]]:
    """The lines a praise cites, like ``quote``."""
    return _cited(f"praise at {praise.where}", praise.lines, praise.anchor, lines)


# The improved implementation, shown in the review from this file's own source.
def _improved_objects() -> list[Any]:
    """What the review shows, in reading order (defined below, hence a function)."""
    return [
        InvalidUpdate,
        InvalidUpdateFile,
        UpdateRequest,
        _amount,
        UpdateResult,
        UpdateSummary,
        _echoed,
        ProductUpdater,
        _given_id,
        load_updates,
    ]


def improved_source() -> list[tuple[str, int, int, str]]:
    """(name, first line, last line, source) of each piece of the improved implementation."""
    pieces = []
    for obj in _improved_objects():
        source, first = inspect.getsourcelines(obj)
        pieces.append((obj.__name__, first, first + len(source) - 1, "".join(source).rstrip()))
    return pieces


def verdict_lines(findings: Sequence[Finding]) -> list[str]:
    """What the review concludes, first: request changes, and the blocking findings by risk."""
    blocking = ordered_findings(f for f in findings if f.blocking)
    return [
        f"Verdict: request changes. {len(blocking)} blocking findings must be fixed before this "
        "merges, the most dangerous first: "
        + "; ".join(f"{f.id} ({f.severity}): {f.title}" for f in blocking)
        + ".",
        "Today, before anything else: revoke and rotate the hard-coded live token, purge it "
        "from the history and add secret scanning (SEC-1).",
        "Each blocking finding comes with a small fix in the junior's own code, one short pull "
        "request each; the improved implementation at the end is the reference they lead to.",
    ]


def summary_lines(findings: Sequence[Finding]) -> list[str]:
    """The review's conclusion: counts, coverage, the improved version and the persistence note."""
    severities = Counter(f.severity for f in findings)
    categories = Counter(f.category for f in findings)
    facts = sum(f.is_fact for f in findings)
    blocking = sum(f.blocking for f in findings)
    return [
        f"{len(findings)} findings, {blocking} blocking: "
        + ", ".join(f"{severities[s]} {s}" for s in SEVERITIES if severities[s])
        + f"; {facts} demonstrated by a test, {len(findings) - facts} labelled judgement.",
        "By category: " + ", ".join(f"{c} {categories[c]}" for c in CATEGORIES) + ".",
        "ruff --select ALL rules accounted for: " + ", ".join(sorted(covered_rules(findings))),
        "The improved implementation fixes every finding. It paces its workers with the "
        "pipeline's shared DummyJsonClient (RequestPacer: "
        f"{DEFAULT_RATE_LIMIT:g} requests a second by default, and a Retry-After pauses every "
        "worker), keeps the updates of one product in file order, and reports a write as "
        "updated only when the API answers 200 or 201 with the product as written. "
        "Try it: python code_review.py --apply updates.json --api-url URL.",
        f"Note: {NOT_PERSISTED}",
    ]


def _wrap(text: str, first: str = "    ", rest: str = "    ") -> str:
    """Fill to 100 columns without splitting a word (a test name stays searchable)."""
    return textwrap.fill(
        text,
        width=100,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


def render_text(lines: Sequence[str]) -> str:
    """The review as plain text for a terminal."""
    findings = ordered_findings()
    out = [f"Code review of {JUNIOR_NAME} ({len(lines)} lines)", ""]
    out.extend(_wrap(line, "", "") for line in verdict_lines(findings))
    for heading, blocking in (("BLOCKING", True), ("NON-BLOCKING", False)):
        out.extend(("", heading))
        for f in (f for f in findings if f.blocking is blocking):
            head = (
                f"[{f.id}] {f.comment_label}: {f.title} ({f.severity}, {f.category}, {f.where}). "
                f"{f.problem} — Why it matters: {f.why}"
            )
            out.append(_wrap(f"{head} — Fix: {f.fix}", first=""))
            out.extend(f"    {number:>4} | {text}" for number, text in quote(f, lines))
            if f.blocking:
                out.append("    small fix, a pull request of its own:")
                out.extend(f"      {line}" for line in fix_diff(f))
            rules = f"; ruff: {', '.join(f.rules)}" if f.rules else ""
            out.append(_wrap(f"evidence: {f.evidence}{rules}"))
    out.extend(("", "PRAISE"))
    for praise in PRAISE:
        out.append(_wrap(f"praise: {praise.text} ({praise.where})", first=""))
        out.extend(f"    {n:>4} | {text}" for n, text in quote_praise(praise, lines))
    out.extend(("", "IMPROVED IMPLEMENTATION (code_review.py)"))
    for name, first, last, source in improved_source():
        out.extend((f"# --- {name}, code_review.py lines {first}-{last}", source, ""))
    out.append("SUMMARY")
    out.extend(_wrap(line, "", "") for line in summary_lines(findings))
    return "\n".join(out)


def render_markdown(lines: Sequence[str]) -> str:
    """The review as Markdown, for a pull request."""
    findings = ordered_findings()
    out = [f"# Code review: `{JUNIOR_NAME}`", ""]
    for n, line in enumerate(verdict_lines(findings)):
        out.extend((f"**{line}**" if n == 0 else line, ""))
    for heading, blocking in (("Blocking", True), ("Non-blocking", False)):
        out.extend((f"## {heading}", ""))
        for f in (f for f in findings if f.blocking is blocking):
            out.extend(
                (
                    f"### {f.id} **{f.comment_label}:** {f.title}",
                    "",
                    f"{f.severity.capitalize()} {f.category}, {f.where}: {f.problem}",
                    "",
                    "```python",
                    *(f"{number:>4} | {text}" for number, text in quote(f, lines)),
                    "```",
                    "",
                    f"- **Why it matters:** {f.why}",
                    f"- **Fix:** {f.fix}",
                    f"- **Evidence:** {_markdown_evidence(f)}",
                )
            )
            if f.rules:
                out.append("- **ruff:** " + ", ".join(f"`{rule}`" for rule in f.rules))
            if f.blocking:
                out.extend(("", "Small fix, a pull request of its own:", "", "```diff"))
                out.extend((*fix_diff(f), "```"))
            out.append("")
    out.extend(("## Praise", ""))
    for praise in PRAISE:
        out.extend((f"- **praise:** {praise.text} ({praise.where})", "", "  ```python"))
        out.extend(f"  {n:>4} | {text}" for n, text in quote_praise(praise, lines))
        out.extend(("  ```", ""))
    out.extend(("## Improved implementation", ""))
    for name, first, last, source in improved_source():
        out.extend((f"`{name}` (`code_review.py` lines {first}-{last}):", "", "```python"))
        out.extend((source, "```", ""))
    out.extend(("## Summary", ""))
    out.extend(f"- {line}" for line in summary_lines(findings))
    return "\n".join(out)


def _markdown_evidence(finding: Finding) -> str:
    if finding.is_fact:
        return f"test `{finding.evidence.removeprefix('test: ')}`"
    return "judgement (no test can decide it)"


def review_document(lines: Sequence[str]) -> dict[str, Any]:
    """The review as one JSON-ready document, for a tool."""
    findings = ordered_findings()
    return {
        "file": JUNIOR_NAME,
        "verdict": verdict_lines(findings),
        "findings": [
            {
                "id": f.id,
                "title": f.title,
                "label": f.comment_label,
                "blocking": f.blocking,
                "category": f.category,
                "severity": f.severity,
                "lines": list(f.lines),
                "problem": f.problem,
                "why": f.why,
                "fix": f.fix,
                "evidence": f.evidence,
                "kind": "fact" if f.is_fact else "judgement",
                "rules": list(f.rules),
                "quote": [{"line": n, "text": text} for n, text in quote(f, lines)],
                "diff": "\n".join(fix_diff(f)) if f.blocking else None,
            }
            for f in findings
        ],
        "praise": [
            {
                "label": "praise",
                "lines": list(praise.lines),
                "text": praise.text,
                "quote": [{"line": n, "text": text} for n, text in quote_praise(praise, lines)],
            }
            for praise in PRAISE
        ],
        "improved": [
            {"name": name, "file": "code_review.py", "lines": [first, last], "source": source}
            for name, first, last, source in improved_source()
        ],
        "summary": summary_lines(findings),
        "note": NOT_PERSISTED,
    }


def render_review(fmt: str = "text") -> str:
    """The review in one of ``FORMATS``, quoting the junior file as it is now."""
    lines = junior_lines()
    if fmt == "json":
        return json.dumps(review_document(lines), indent=2, ensure_ascii=False)
    if fmt == "markdown":
        return render_markdown(lines)
    return render_text(lines)


# --- the improved implementation --------------------------------------------------------------

UPDATE_FIELDS = ("id", "title", "price", "description")
MAX_PRODUCT_ID = 2**31 - 1
MAX_TITLE_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
MAX_PRICE = Decimal("9999999999.99")  # the catalog's money column is Numeric(12, 2)
CENT = Decimal("0.01")
DEFAULT_CONCURRENCY = 4
# Workers only overlap requests; the client's pacer sets the pace. Ten keep 9 requests a
# second going even when each takes a second.
MAX_CONCURRENCY = 10


class InvalidUpdate(PipelineError):
    """An update item that must not be sent; the message names the field and what arrived."""


class InvalidUpdateFile(PipelineError):
    """The updates file cannot be read or is not a JSON array (exit code 2)."""


def _shown(value: Any) -> str:
    try:
        shown = repr(value)
    except RecursionError:
        shown = "(nested too deeply to show)"
    return f"{type(value).__name__} {excerpt(shown, 40)}"


@dataclass(frozen=True)
class UpdateRequest:
    """One product update, ``PUT /products/{product_id}``, valid by construction."""

    product_id: int
    title: str
    price: Decimal
    description: str

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``InvalidUpdate`` naming the first value no update may carry."""
        if isinstance(self.product_id, bool) or not 1 <= self.product_id <= MAX_PRODUCT_ID:
            raise InvalidUpdate(f"id: expected a positive integer, got {self.product_id!r}")
        if not self.title.strip():
            raise InvalidUpdate("title: must not be empty")
        if len(self.title) > MAX_TITLE_LENGTH:
            raise InvalidUpdate(
                f"title: {len(self.title)} characters, at most {MAX_TITLE_LENGTH} allowed"
            )
        if not self.price.is_finite() or self.price <= 0:
            raise InvalidUpdate(f"price: expected a positive amount, got {self.price}")
        if self.price > MAX_PRICE:
            raise InvalidUpdate(f"price: {self.price} is above the maximum {MAX_PRICE}")
        if self.price != self.price.quantize(CENT):
            raise InvalidUpdate(f"price: {self.price} has more than 2 decimals")
        if len(self.description) > MAX_DESCRIPTION_LENGTH:
            raise InvalidUpdate(
                f"description: {len(self.description)} characters, "
                f"at most {MAX_DESCRIPTION_LENGTH} allowed"
            )

    @classmethod
    def from_dict(cls, raw: Any) -> UpdateRequest:
        """Parse one item of an updates file, or raise ``InvalidUpdate`` saying what is wrong."""
        if not isinstance(raw, dict):
            raise InvalidUpdate(
                f"expected an object with {', '.join(UPDATE_FIELDS)}, got {type(raw).__name__}"
            )
        missing = [name for name in UPDATE_FIELDS if name not in raw]
        if missing:
            raise InvalidUpdate(f"missing {', '.join(missing)}")
        unknown = sorted(str(name) for name in raw if name not in UPDATE_FIELDS)
        if unknown:
            raise InvalidUpdate(
                f"unknown field(s) {', '.join(unknown)}; expected {', '.join(UPDATE_FIELDS)}"
            )
        product_id, title, price, description = (raw[name] for name in UPDATE_FIELDS)
        if not is_int(product_id):
            raise InvalidUpdate(f"id: expected a positive integer, got {_shown(product_id)}")
        for name, value in (("title", title), ("description", description)):
            if not isinstance(value, str):
                raise InvalidUpdate(f"{name}: expected text, got {_shown(value)}")
        return cls(product_id, title, _amount(price), description)

    def payload(self) -> dict[str, Any]:
        """The JSON body: the price as the shortest number that reads back exactly."""
        integral = self.price == self.price.to_integral_value()
        price = int(self.price) if integral else float(self.price)
        return {"title": self.title, "price": price, "description": self.description}


def _amount(value: Any) -> Decimal:
    """A JSON number as an exact Decimal; text, booleans and null are not prices."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise InvalidUpdate(f"price: expected a number, got {_shown(value)}")
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


@dataclass(frozen=True)
class UpdateResult:
    """What happened to one item: updated, or failed with the reason."""

    product_id: int | None  # None when the item had no usable id
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class UpdateSummary:
    """A batch in numbers, and the exit code it deserves."""

    total: int
    updated: int
    seconds: float

    @classmethod
    def of(cls, results: Sequence[UpdateResult], seconds: float) -> UpdateSummary:
        """Count the results of a batch that took ``seconds``."""
        return cls(len(results), sum(result.ok for result in results), seconds)

    @property
    def failed(self) -> int:
        """Items not updated, invalid ones included."""
        return self.total - self.updated

    @property
    def exit_code(self) -> int:
        """0 when every item was updated, 1 otherwise."""
        return 0 if self.failed == 0 else 1

    def __str__(self) -> str:
        return (
            f"updated {self.updated} of {self.total} products, {self.failed} failed, "
            f"in {self.seconds:.1f} s"
        )


def _echoed(document: Any, request: UpdateRequest) -> dict[str, Any]:
    """The API's answer to a PUT, which must be the product updated, holding what was written.

    DummyJSON answers a PUT with the product as updated. Anything else (another product, the
    old values, a gateway's ``{"message": ...}``) means the write was not applied as sent.
    """
    if not isinstance(document, dict) or document.get("id") != request.product_id:
        raise UnexpectedPayload(
            f"expected product {request.product_id} back, got {excerpt(repr(document), 80)}",
            url="",
        )
    written = {"title": request.title, "price": request.price, "description": request.description}
    differing = [name for name, value in written.items() if _read_back(document.get(name)) != value]
    if differing:
        raise UnexpectedPayload(
            f"product {request.product_id} came back without the values written "
            f"({', '.join(differing)} differ)",
            url="",
        )
    return document


def _read_back(value: Any) -> Any:
    """A value of an answer, with a price as an exact Decimal (as the request holds it)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return value


class ProductUpdater:
    """Apply product updates through a ``DummyJsonClient``: validated, concurrent, paced.

    Invalid items fail before any request. Valid ones go out ``concurrency`` at a time; the
    client brings the pooled session, the timeouts, the retries (429 and 5xx with
    ``Retry-After``, never a 4xx), writes that never follow a redirect and count as applied
    only on 200 or 201, and the pacing: every request, from any worker, waits its turn
    from the client's one ``RequestPacer``, and a ``Retry-After`` pauses them all. Build the
    client with ``DummyJsonClient.from_settings`` to pace at ``--rate-limit`` (9 a second by
    default, within DummyJSON's 100 per 10 s). Each item gets an ``UpdateResult``. Only the
    pipeline's own errors become failures, so a bug still raises. PUT is idempotent, so a batch
    can simply be run again.
    """

    def __init__(self, client: DummyJsonClient, *, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.client = client
        self.concurrency = concurrency

    def update(self, request: UpdateRequest) -> UpdateResult:
        """Send one update; the API's refusal or silence is a failed result, a bug still raises."""
        try:
            # request_json waits for the client's pacer before every attempt, retries included.
            self.client.request_json(
                "PUT",
                f"/products/{request.product_id}",
                payload=request.payload(),
                expect=lambda document: _echoed(document, request),
            )
        except PipelineError as exc:
            log.warning("product %d not updated: %s", request.product_id, exc)
            return UpdateResult(request.product_id, ok=False, reason=str(exc))
        log.debug("product %d updated", request.product_id)
        return UpdateResult(request.product_id, ok=True)

    def update_many(self, items: Iterable[Any]) -> list[UpdateResult]:
        """One result per item, in input order; items are parsed, never modified.

        Different products are updated concurrently; the updates of one product go one after
        another in file order, so the last one in the file is the one that stays, as when the
        file is applied line by line.
        """
        items = list(items)
        results: dict[int, UpdateResult] = {}
        by_product: dict[int, list[tuple[int, UpdateRequest]]] = {}
        for index, item in enumerate(items):
            try:
                request = item if isinstance(item, UpdateRequest) else UpdateRequest.from_dict(item)
            except InvalidUpdate as exc:
                log.warning("item %d rejected: %s", index + 1, exc)
                results[index] = UpdateResult(_given_id(item), ok=False, reason=f"invalid: {exc}")
                continue
            by_product.setdefault(request.product_id, []).append((index, request))
        if by_product:
            workers = min(self.concurrency, len(by_product))
            with ThreadPoolExecutor(workers, thread_name_prefix="update") as pool:
                for done in pool.map(self._update_in_order, by_product.values()):
                    results.update(done)
        return [results[index] for index in range(len(items))]

    def _update_in_order(
        self, queue: Sequence[tuple[int, UpdateRequest]]
    ) -> dict[int, UpdateResult]:
        """One product's updates, each sent once the one before it was answered."""
        return {index: self.update(request) for index, request in queue}


def _given_id(item: Any) -> int | None:
    """The id an invalid item was meant for, when it has a usable one."""
    product_id = item.get("id") if isinstance(item, dict) else None
    return product_id if is_int(product_id) and product_id > 0 else None


def load_updates(path: Path) -> list[Any]:
    """The items of an updates file (a JSON array), or ``InvalidUpdateFile`` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidUpdateFile(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise InvalidUpdateFile(f"{path}: not UTF-8 text ({exc.reason})") from exc
    try:
        document = json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        raise InvalidUpdateFile(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidUpdateFile(
            f"{path}: nested too deeply to read (an update is one flat object)"
        ) from None
    if not isinstance(document, list):
        raise InvalidUpdateFile(
            f"{path}: expected a JSON array of updates, got {type(document).__name__}"
        )
    return document


def render_results(results: Sequence[UpdateResult], summary: UpdateSummary, fmt: str) -> str:
    """Per-item results, the summary and the persistence note, as text, Markdown or JSON."""
    if fmt == "json":
        document = {
            "results": [
                {"item": n, "product_id": r.product_id, "ok": r.ok, "reason": r.reason}
                for n, r in enumerate(results, 1)
            ],
            "summary": {
                "total": summary.total,
                "updated": summary.updated,
                "failed": summary.failed,
                "seconds": round(summary.seconds, 3),
            },
            "note": NOT_PERSISTED,
        }
        return json.dumps(document, indent=2)
    rows = [
        (n, "-" if r.product_id is None else str(r.product_id), r.reason or "updated")
        for n, r in enumerate(results, 1)
    ]
    if fmt == "markdown":
        table = ["| item | product | result |", "|---|---|---|"]
        table += [f"| {n} | {pid} | {text.replace('|', '/')} |" for n, pid, text in rows]
        return "\n".join([*table, "", f"**{summary}.**", "", f"Note: {NOT_PERSISTED}"])
    lines = [f"item {n} (product {pid}): {text}" for n, pid, text in rows]
    return "\n".join([*lines, str(summary), f"note: {NOT_PERSISTED}"])


# --- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line: the review by default, or ``--apply`` an updates file."""
    parser = argparse.ArgumentParser(
        description="Review junior/product_updater.py, or apply product updates with the "
        "improved implementation."
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format")
    parser.add_argument(
        "--apply", type=Path, metavar="FILE", help="apply a JSON array of updates to the API"
    )
    parser.add_argument(
        "--api-url", help="API base URL (env API_BASE_URL; default https://dummyjson.com)"
    )
    parser.add_argument(
        "--concurrency",
        help=f"updates in flight at once, 1..{MAX_CONCURRENCY} "
        f"(env CONCURRENCY; default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--rate-limit",
        help=f"requests per second at most, shared by the workers; 0 = unpaced (env RATE_LIMIT; "
        f"default {DEFAULT_RATE_LIMIT:g}, within DummyJSON's 100 per 10 s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every update")
    return parser


def apply_updates(path: Path, args: argparse.Namespace) -> int:
    """Apply an updates file; print per-item results and the summary; return the exit code."""
    try:
        settings = resolve_settings(args)
        if not 1 <= settings.concurrency <= MAX_CONCURRENCY:
            raise ConfigError(
                f"--concurrency / CONCURRENCY: expected 1..{MAX_CONCURRENCY}, "
                f"got {settings.concurrency}"
            )
        items = load_updates(path)
    except (ConfigError, InvalidUpdateFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.verbose)
    pace = f"at most {settings.rate_limit:g} requests/s" if settings.rate_limit else "unpaced"
    log.info(
        "applying %d updates to %s, %d at a time, %s",
        len(items),
        settings.api_url,
        settings.concurrency,
        pace,
    )
    started = time.perf_counter()
    with DummyJsonClient.from_settings(settings) as client:
        results = ProductUpdater(client, concurrency=settings.concurrency).update_many(items)
    summary = UpdateSummary.of(results, time.perf_counter() - started)
    print(render_results(results, summary, args.format))
    return summary.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Print the review, or apply updates: 0 ok, 1 some updates failed, 2 bad usage or file."""
    args = build_parser().parse_args(argv)
    if args.apply is not None:
        return apply_updates(args.apply, args)
    print(render_review(args.format))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
