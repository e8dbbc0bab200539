"""A local HTTP server that speaks DummyJSON's /products protocol, for tests, benchmarks and demos.

Tests, benchmarks and offline demos cannot depend on https://dummyjson.com, so this module
serves the same protocol (documented at https://dummyjson.com/docs/products) from a real threaded
HTTP server on 127.0.0.1: paging with `limit`/`skip`
(the response's `limit` echoes the count returned, `limit=0` returns everything), `select`,
`sortBy`/`order`, `delay`, single products, the non-persisting writes, the 301 on a trailing slash,
the HTML 404 page, rate-limit headers and an optional 429 rate limit. A "busy" mode moves the
catalog while clients page, as a marketplace's does: every N list requests it deletes products
already served and appends new ones.

Products are synthetic but imitate the real catalog's quirks (absent `brand`, integer prices, money
that float32 would round, barcodes with leading zeros, repeated titles, a reviewer twice on one
product, non-ASCII text and URLs). A `Catalog` stores only ids and overrides and generates products
on demand, so a million products cost a few megabytes. Faults (error statuses, truncated bodies,
dropped connections, stalls, seeded chaos) can be injected per request.

In tests::

    with FakeDummyJson(products=194) as api:
        requests.get(f"{api.url}/products", params={"skip": 190}, timeout=5)

As an offline demo (serves until Ctrl-C and logs its URL)::

    python -m tools.local_api --port 8000 --products 500 [--seed 0] [--latency-ms 0] [--rate-limit]
                              [--busy N] [--busy-changes 2]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import html
import json
import logging
import math
import random
import socket
import sys
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = [
    "Catalog",
    "FakeDummyJson",
    "Fault",
    "RequestRecord",
    "SchemaChange",
    "main",
    "make_product",
]

log = logging.getLogger(__name__)

JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
DEFAULT_LIMIT = 30
MAX_DELAY_MS = 5000
DUMMYJSON_RATE_LIMIT = (100, 10.0)
RATE_LIMIT_MESSAGE = "request limit exceeded, please wait a few seconds"
# Fields a PUT/PATCH answers with, as DummyJSON does.
UPDATE_FIELDS = (
    "id",
    "title",
    "price",
    "discountPercentage",
    "stock",
    "rating",
    "images",
    "thumbnail",
    "description",
    "brand",
    "category",
)
FAULT_KINDS = ("status", "truncate", "drop", "stall", "trickle", "body")
CHAOS_KINDS = ("500", "502", "503", "429", "truncate", "drop")

# --------------------------------------------------------------------------- synthetic products

CATEGORIES = (
    "beauty",
    "fragrances",
    "furniture",
    "groceries",
    "home-decoration",
    "kitchen-accessories",
    "laptops",
    "mens-shirts",
    "skin-care",
    "smartphones",
    "sports-accessories",
    "sunglasses",
    "tablets",
    "womens-bags",
)
# Few titles for many products, so titles repeat like the real catalog's.
TITLES = (
    "Essence Mascara Lash Princess",
    "Eyeshadow Palette with Mirror",
    "Powder Canister",
    "Red Lipstick",
    "Calvin Klein CK One",
    "Chanel Coco Noir Eau De",
    "Annibale Colombo Bed",
    "Wooden Bathroom Sink With Mirror",
    "Apple",
    "Beef Steak",
    "Cat Food",
    "Crème brûlée d'Été & Co",
    "Jalapeño Hot Sauce",
    "Ünïcödé 🚀 Rocket Lamp",
    'The "Best" Coffee Mug',
    "Men's Leather Belt",
    "Kiwi",
    "Decoration Swing",
    "Family Tree Photo Frame",
    "Bamboo Spatula",
    "Apple MacBook Pro 14 Inch Space Grey",
    "Asus Zenbook Pro Dual Screen Laptop",
    "Blue & Black Check Shirt",
    "Gigabyte Aorus Men Tshirt",
    "Attitude Super Leaves Hand Soap",
    "iPhone 5s",
    "Samsung Galaxy S10",
    "Oppo A57",
    "Football",
    "Tennis Racket",
    "Black Sun Glasses",
    "Party Glasses",
    "iPad Mini 2021 Starlight",
    "Blue Women's Handbag",
    "Gräfin von Müller Tote",
    "Smörgåsbord Cutting Board",
)
BRANDS = (
    "Essence",
    "Glamour Beauty",
    "Velvet Touch",
    "Chic Cosmetics",
    "Calvin Klein",
    "Chanel",
    "Dolce & Gabbana",
    "Annibale Colombo",
    "Furniture Co.",
    "Apple",
    "Asus",
    "Samsung",
    "Oppo",
    "Gigabyte",
    "Fashion Trends",
    "L'Oréal",
    "Müller & Söhne",
    "Nike",
    "Puma",
    "Off White",
)
DESCRIPTIONS = (
    "The Essence Mascara Lash Princess is a popular mascara known for its volumizing effect.",
    "Fresh & juicy: a customer favourite for snacks, salads and smoothies.",
    'A "must-have" for every kitchen, it\'s built to last & easy to clean.',
    "Crème brûlée flavoured, crafted in Île-de-France by the Société d'Été.",
    "Spicy jalapeño sauce, señor! Hot & tangy 🌶️ with a smoky finish.",
    "Ünïcödé-ready design 🚀 with naïve café-style charm.",
    "The kid's favourite: soft, safe and machine washable.",
    "Sleek, modern and powerful; 100% recycled <b>aluminium</b> body.",
)
TAGS = (
    "beauty",
    "mascara",
    "eyeshadow",
    "face powder",
    "lipstick",
    "fragrances",
    "perfumes",
    "furniture",
    "beds",
    "bathroom",
    "fruits",
    "meat",
    "pet supplies",
    "cat food",
    "desserts",
    "spicy",
    "home decor",
    "kitchen tools",
    "laptops",
    "clothing",
    "men's shirts",
    "skin care",
    "smartphones",
    "sports",
    "sunglasses",
    "tablets",
    "women's bags",
    "crème",
    "sale & clearance",
)
REVIEWERS = (
    ("Eleanor Collins", "eleanor.collins@x.dummyjson.com"),
    ("Lucas Gordon", "lucas.gordon@x.dummyjson.com"),
    ("Eleanor Collins", "eleanor.collins2@x.dummyjson.com"),
    ("Zoë O'Connor", "zoe.o'connor@x.dummyjson.com"),
    ("José Álvarez", "jose.alvarez@x.dummyjson.com"),
    ("Björn Ångström", "bjorn.angstrom@x.dummyjson.com"),
    ("Nora Russell", "nora.russell@x.dummyjson.com"),
    ("Scarlett Wright", "scarlett.wright@x.dummyjson.com"),
    ("Liam O'Brien", "liam.o'brien@x.dummyjson.com"),
    ("Chloé Dubois", "chloe.dubois@x.dummyjson.com"),
)
COMMENTS = (
    "Very satisfied!",
    "Would buy again!",
    "Highly recommended!",
    "Not as described!",
    "Very unhappy with my purchase!",
    "Great value for money!",
    "Excellent quality & fast delivery!",
    'It\'s the "real deal" 👍',
    "Très bien, merci !",
    "Disappointing product!",
)
WARRANTIES = (
    "1 week warranty",
    "1 month warranty",
    "3 months warranty",
    "1 year warranty",
    "2 year warranty",
    "5 year warranty",
    "Lifetime warranty",
    "No warranty",
)
SHIPPINGS = (
    "Ships overnight",
    "Ships in 1-2 business days",
    "Ships in 3-5 business days",
    "Ships in 1 week",
    "Ships in 2 weeks",
    "Ships in 1 month",
)
RETURN_POLICIES = (
    "7 days return policy",
    "30 days return policy",
    "60 days return policy",
    "90 days return policy",
    "No return policy",
)
# Prices a float32 (PostgreSQL real) cannot hold to the cent.
EDGE_PRICES: tuple[float | int, ...] = (16777217.99, 16777217, 1899.99, 0.01, 99999999.99)
IMAGE_ROOT = "https://cdn.dummyjson.com/products/images"
QR_CODE = "https://cdn.dummyjson.com/public/qr-code.png"
# The real catalog stamps most products with the same instant.
CREATED_BASE = datetime(2024, 5, 23, 8, 56, 21, 618000)
SKU_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SKU_BODY_LENGTH = 6
SKU_SPACE = 36**SKU_BODY_LENGTH
SKU_MULTIPLIER = 1_664_525  # coprime with 36, so id -> body is a bijection below SKU_SPACE


def make_product(product_id: int, seed: int = 0, variant: int = 0) -> dict[str, Any]:
    """Build one DummyJSON-shaped product, quirks included, as a pure function of its arguments."""
    rng = random.Random(f"{seed}:{product_id}:0")
    category = rng.choice(CATEGORIES)
    title = rng.choice(TITLES)
    days = 0 if rng.random() < 0.75 else rng.randrange(1, 400)
    created = _iso(CREATED_BASE + timedelta(days=days))
    stock = 0 if rng.random() < 0.05 else rng.randint(1, 150)
    product: dict[str, Any] = {
        "id": product_id,
        "title": title,
        "description": rng.choice(DESCRIPTIONS),
        "category": category,
        "price": _price(rng),
        "discountPercentage": _percentage(rng),
        "rating": rng.randint(1, 5) if rng.random() < 0.08 else round(rng.uniform(1.0, 5.0), 2),
        "stock": stock,
        "tags": _tags(rng, category),
        "brand": rng.choice(BRANDS),
        "sku": _sku(product_id),
        "weight": rng.randint(1, 10),
        "dimensions": {"width": _size(rng), "height": _size(rng), "depth": _size(rng)},
        "warrantyInformation": rng.choice(WARRANTIES),
        "shippingInformation": rng.choice(SHIPPINGS),
        "availabilityStatus": _availability(stock),
        "reviews": _reviews(rng, created),
        "returnPolicy": rng.choice(RETURN_POLICIES),
        "minimumOrderQuantity": rng.randint(1, 50),
        "meta": {
            "createdAt": created,
            "updatedAt": created,
            "barcode": _barcode(rng),
            "qrCode": QR_CODE,
        },
        **_images(rng, category, title),
    }
    if rng.random() < 0.15:
        del product["brand"]  # absent, not null, like the real catalog's optional keys
    if variant:
        _apply_variant(product, random.Random(f"{seed}:{product_id}:{variant}"), variant)
    return product


def _price(rng: random.Random) -> float | int:
    """Money with at most two decimals, sometimes an integer, sometimes beyond float32's cents."""
    roll = rng.random()
    if roll < 0.60:
        return round(rng.uniform(0.5, 500.0), 2)
    if roll < 0.72:
        return round(rng.randint(1, 2999) + 0.99, 2)  # 1899.99 style
    if roll < 0.87:
        return rng.randint(1, 2000)
    if roll < 0.95:
        return round(rng.uniform(100_000.0, 20_000_000.0), 2)
    return rng.choice(EDGE_PRICES)


def _percentage(rng: random.Random) -> float | int:
    """A discount in 0..100 with two decimals, sometimes a plain integer like 5."""
    if rng.random() < 0.1:
        return rng.choice((0, 5, 10, 15, 20, 50, 100))
    return round(rng.uniform(0.01, 99.99), 2)


def _size(rng: random.Random) -> float | int:
    """A dimension with two decimals, sometimes arriving as an integer."""
    return rng.randint(1, 30) if rng.random() < 0.15 else round(rng.uniform(1.0, 30.0), 2)


def _availability(stock: int) -> str:
    """DummyJSON's availability wording for a stock level."""
    if stock == 0:
        return "Out of Stock"
    return "Low Stock" if stock < 10 else "In Stock"


def _tags(rng: random.Random, category: str) -> list[str]:
    """0-5 tags, the category's first; empty now and then, a repeated tag rarely."""
    count = 0 if rng.random() < 0.07 else rng.randint(1, 5)
    tags = [category.replace("-", " "), *rng.sample(TAGS, 4)][:count]
    if tags and count < 5 and rng.random() < 0.04:
        tags.append(tags[0])
    return tags


def _reviews(rng: random.Random, date: str) -> list[dict[str, Any]]:
    """0-5 reviews sharing one coarse date; the same reviewer sometimes reviews twice."""
    count = 0 if rng.random() < 0.07 else rng.randint(1, 5)
    reviews = []
    for _ in range(count):
        name, email = rng.choice(REVIEWERS)
        reviews.append(
            {
                "rating": rng.randint(1, 5),
                "comment": rng.choice(COMMENTS),
                "date": date,
                "reviewerName": name,
                "reviewerEmail": email,
            }
        )
    if 2 <= count < 5 and rng.random() < 0.15:
        first = reviews[0]
        reviews.append({**first, "rating": rng.randint(1, 5), "comment": rng.choice(COMMENTS)})
    return reviews


def _images(rng: random.Random, category: str, title: str) -> dict[str, Any]:
    """1-4 image URLs and a thumbnail, percent-encoded, or now and then raw non-ASCII."""
    folder = title if rng.random() < 0.1 else quote(title)
    base = f"{IMAGE_ROOT}/{category}/{folder}"
    images = [f"{base}/{n}.png" for n in range(1, rng.randint(1, 4) + 1)]
    return {"images": images, "thumbnail": f"{base}/thumbnail.png"}


def _barcode(rng: random.Random) -> str:
    """A 13-digit barcode as text, often with leading zeros that an integer column would lose."""
    if rng.random() < 0.4:
        return f"{rng.randrange(10**12):013d}"
    return str(rng.randrange(10**12, 10**13))


def _sku(product_id: int) -> str:
    """A unique text SKU derived from the id alone, like "00RCH45Q" (leading zeros included)."""
    prefix = f"{product_id * 37 % 100:02d}"
    if not 0 <= product_id < SKU_SPACE:
        return prefix + _base36(product_id)  # longer than any body below, so still unique
    return prefix + _base36(product_id * SKU_MULTIPLIER % SKU_SPACE).rjust(SKU_BODY_LENGTH, "0")


def _base36(number: int) -> str:
    """Encode a non-negative integer in upper-case base 36."""
    number = abs(number)
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = SKU_ALPHABET[digit] + digits
        if not number:
            return digits


def _iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and Z, the real catalog's timestamp format."""
    return moment.isoformat(timespec="milliseconds") + "Z"


def _apply_variant(product: dict[str, Any], rng: random.Random, variant: int) -> None:
    """Change price, stock, title, updatedAt and one review so a touched product really differs."""
    price = product["price"]
    if isinstance(price, int):
        product["price"] = price + rng.randint(1, 50)
    else:
        product["price"] = round(price * rng.uniform(1.05, 1.3) + 0.01, 2)
    product["stock"] = product["stock"] + variant
    product["availabilityStatus"] = _availability(product["stock"])
    product["title"] = rng.choice(TITLES)
    if product["reviews"]:
        review = product["reviews"][rng.randrange(len(product["reviews"]))]
        review["comment"] = f"Edited ({variant}): {rng.choice(COMMENTS)}"
    created = datetime.fromisoformat(product["meta"]["createdAt"].rstrip("Z"))
    updated = created + timedelta(hours=variant, milliseconds=rng.randrange(1000))
    product["meta"]["updatedAt"] = _iso(updated)


@dataclass(frozen=True)
class SchemaChange:
    """How the served catalog's fields differ from DummyJSON's today, as an evolving API's would.

    Each entry is a field path: ``"color"``, ``"meta.batch"``, ``"reviews[].likes"``. ``add``
    serves a new field (text derived from the product id: ``"color-3"``), ``drop`` removes one,
    ``retype`` serves a number as its text and any other value as a number (its length).
    """

    add: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    retype: tuple[str, ...] = ()

    def apply(self, product: dict[str, Any]) -> None:
        """Change one generated product in place."""
        for path in self.add:
            for holder, key in _holders(product, path):
                holder[key] = f"{key}-{product['id'] % 7}"
        for path in self.drop:
            for holder, key in _holders(product, path):
                holder.pop(key, None)
        for path in self.retype:
            for holder, key in _holders(product, path):
                if key in holder:
                    holder[key] = _retyped(holder[key])


def _holders(product: dict[str, Any], path: str) -> list[tuple[dict[str, Any], str]]:
    """The objects that hold the field ``path`` (several for ``reviews[].x``), with its key."""
    container, dot, key = path.rpartition(".")
    if not dot:
        return [(product, key)]
    if container.endswith("[]"):
        items = product.get(container[:-2]) or []
        return [(item, key) for item in items if isinstance(item, dict)]
    nested = product.get(container)
    return [(nested, key)] if isinstance(nested, dict) else []


def _retyped(value: Any) -> Any:
    """A number as its text; text, lists and objects as their length; anything else as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str | list | dict):
        return len(value)
    return str(value)


# One encoder for every response: json.dumps with arguments would build a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _encode(payload: Any) -> bytes:
    """Encode JSON the way DummyJSON does: compact, UTF-8, non-ASCII kept."""
    return _ENCODER.encode(payload).encode()


# --------------------------------------------------------------------------- catalog


class _LruCache:
    """A bounded map from (id, variant) to encoded JSON, so repeated pages skip generation."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    def get(self, key: tuple[int, int]) -> bytes | None:
        """Return the cached value and mark it recently used."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: tuple[int, int], value: bytes) -> None:
        """Store a value, evicting the least recently used beyond the bound."""
        if self.size <= 0:
            return
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)


class Catalog:
    """The mutable, thread-safe set of products a FakeDummyJson serves, ordered by id.

    Holds only a sorted array of ids, the variant of touched ids and the raw content of `put`
    products; everything else is generated on demand by `make_product` (about 50 us a product).
    The JSON of served products is kept in an LRU of `cache_size` entries, about 1.5 KB each
    (20,000 = 30 MB); a benchmark that re-reads N products should pass `cache_size=N`.
    """

    def __init__(self, size: int = 100, seed: int = 0, *, cache_size: int = 20_000) -> None:
        self.seed = seed
        self._ids = array("q", range(1, size + 1))
        self._variants: dict[int, int] = {}
        self._raw: dict[int, bytes] = {}
        self._cache = _LruCache(cache_size)
        self._lock = threading.Lock()
        self.schema = SchemaChange()

    def evolve(self, schema: SchemaChange) -> None:
        """Serve every generated product with ``schema``'s changes from now on."""
        with self._lock:
            self.schema = schema
            self._cache = _LruCache(self._cache.size)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def __repr__(self) -> str:
        return f"Catalog(size={len(self)}, seed={self.seed})"

    def ids(self) -> list[int]:
        """Every id, sorted, as a copy the caller may keep."""
        with self._lock:
            return list(self._ids)

    def get(self, product_id: int) -> dict[str, Any] | None:
        """The full product as a fresh copy, or None when the id is not in the catalog."""
        with self._lock:
            if not self._contains(product_id):
                return None
            raw = self._raw.get(product_id)
            variant = self._variants.get(product_id, 0)
        if raw is not None:
            product: dict[str, Any] = json.loads(raw)
            return product
        return self._generate(product_id, variant)

    def _generate(self, product_id: int, variant: int) -> dict[str, Any]:
        """A generated product, with the catalog's schema changes applied."""
        product = make_product(product_id, self.seed, variant)
        self.schema.apply(product)
        return product

    def page(self, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Products from position `skip` (at most `limit`, 0 = all) and the catalog's total."""
        encoded, total = self.encoded_page(skip, limit)
        return [json.loads(item) for item in encoded], total

    def encoded_page(self, skip: int, limit: int) -> tuple[list[bytes], int]:
        """Like `page` but each product already JSON-encoded, the fast path for serving."""
        with self._lock:
            start = max(skip, 0)
            stop = len(self._ids) if limit <= 0 else start + limit
            return [self._encoded(pid) for pid in self._ids[start:stop]], len(self._ids)

    def id_at(self, position: int) -> int | None:
        """The id at a position of the catalog, or None past its end."""
        with self._lock:
            return self._ids[position] if 0 <= position < len(self._ids) else None

    def put(self, product: dict[str, Any], *, at_id: int | None = None) -> None:
        """Insert or replace `product["id"]` with raw content, stored verbatim (even invalid).

        `at_id` places a product whose own `id` is unreadable (`"5"`, `5.0`, absent) where the
        product with that id was, as a hostile catalog would serve it.
        """
        product_id = product["id"] if at_id is None else at_id
        if not isinstance(product_id, int) or isinstance(product_id, bool):
            raise TypeError(f"product id must be an int, got {product_id!r}")
        raw = _encode(product)
        with self._lock:
            if not self._contains(product_id):
                bisect.insort(self._ids, product_id)
            self._raw[product_id] = raw

    def touch(self, product_id: int) -> None:
        """Change a product's content: its variant moves on (a `put` product is generated again)."""
        with self._lock:
            self._require(product_id)
            self._raw.pop(product_id, None)
            self._variants[product_id] = self._variants.get(product_id, 0) + 1

    def delete(self, product_id: int) -> None:
        """Remove a product and whatever overrides it had."""
        with self._lock:
            self._require(product_id)
            del self._ids[bisect.bisect_left(self._ids, product_id)]
            self._raw.pop(product_id, None)
            self._variants.pop(product_id, None)

    def add(self) -> int:
        """Append a newly generated product with id max+1 and return that id."""
        with self._lock:
            product_id = self._ids[-1] + 1 if self._ids else 1
            self._ids.append(product_id)
            return product_id

    def next_id(self) -> int:
        """The id `add` would give, which DummyJSON's POST /products/add answers with."""
        with self._lock:
            return self._ids[-1] + 1 if self._ids else 1

    def products(self) -> Iterator[dict[str, Any]]:
        """Every product in id order, generated one at a time (for test comparisons)."""
        for product_id in self.ids():
            product = self.get(product_id)
            if product is not None:
                yield product

    def _contains(self, product_id: int) -> bool:
        """Whether the id is present (caller holds the lock)."""
        index = bisect.bisect_left(self._ids, product_id)
        return index < len(self._ids) and self._ids[index] == product_id

    def _require(self, product_id: int) -> None:
        """Fail loudly on an unknown id so a test's typo does not pass silently."""
        if not self._contains(product_id):
            raise KeyError(f"product {product_id} is not in the catalog")

    def _encoded(self, product_id: int) -> bytes:
        """One product's JSON, from the raw overrides, the cache, or freshly generated."""
        raw = self._raw.get(product_id)
        if raw is not None:
            return raw
        key = (product_id, self._variants.get(product_id, 0))
        encoded = self._cache.get(key)
        if encoded is None:
            encoded = _encode(self._generate(product_id, key[1]))
            self._cache.put(key, encoded)
        return encoded


# --------------------------------------------------------------------------- faults and records


@dataclass
class Fault:
    """A failure to inject into matching requests, `times` times (-1 = forever).

    `times` counts down in place as requests hit it. "truncate" sends the full Content-Length
    and half the body (requests raises ChunkedEncodingError); "drop" closes without a byte
    (ConnectionError); "stall" sends the headers and a quarter of the body, waits `seconds`,
    then closes: the headers have arrived, so requests reports the read timeout as a
    ConnectionError("Read timed out"), not ReadTimeout (use `latency` or `delay` for that).
    "trickle" sends the real answer one byte every `seconds`, so no single read ever times out.
    "body" answers 200 with `body` verbatim (hostile JSON, a huge total, a gzip bomb with
    `content_encoding="gzip"`).
    """

    kind: str  # "status" | "truncate" | "drop" | "stall" | "trickle" | "body"
    skip: int | None = None  # match GET /products list requests with this skip; None = any
    product_id: int | None = None  # or match /products/{id} requests (any method)
    times: int = 1
    status: int = 500  # for "status": the code to answer, with a JSON {"message": ...} body
    retry_after: str | None = None  # Retry-After for status faults; "1" by default for 429
    seconds: float = 5.0  # for "stall": how long to hang after part of the body
    body: bytes = b""  # for "body": what to answer
    content_encoding: str | None = None  # for "body": a Content-Encoding header to send

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {self.kind!r}")

    def matches(self, is_list: bool, skip: int | None, product_id: int | None) -> bool:
        """Whether this fault applies to a request (list with this skip, or this product id)."""
        if self.product_id is not None:
            if product_id == self.product_id:
                return True
            return is_list and self.skip is not None and skip == self.skip
        return is_list and (self.skip is None or skip == self.skip)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it, and the status it answered (0 = no status line sent)."""

    method: str
    path: str  # without the query string
    query: dict[str, str]  # last value wins, like the real service's query parser
    status: int
    headers: dict[str, str]  # request headers, names lower-cased
    body: bytes  # request body
    arrived: float = 0.0  # time.monotonic() when the request line arrived, before any latency


@dataclass
class _Response:
    """What to send back, and how to break it when a fault says so."""

    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    fault: Fault | None = None


class _BadRequest(Exception):
    """A request DummyJSON answers with 400 and a JSON message."""


@dataclass
class _Chaos:
    """Random failures of list requests, drawn from one seeded generator."""

    rate: float
    kinds: tuple[str, ...]
    rng: random.Random
    retry_after: str

    def draw(self) -> Fault | None:
        """The next fault in the seeded sequence, or None when this request is spared."""
        if self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(self.kinds)
        if kind in ("truncate", "drop"):
            return Fault(kind)
        status = int(kind)
        retry_after = self.retry_after if status in (429, 503) else None  # where clients read it
        return Fault("status", status=status, retry_after=retry_after)


@dataclass
class _Busy:
    """A catalog that moves under its clients, drawn from one seeded generator."""

    every: int  # list requests between two moves
    changes: int  # products deleted, and products appended, at each move
    rng: random.Random
    requests: int = 0
    moves: int = 0

    def move(self, catalog: Catalog, skip: int) -> None:
        """Every ``every``-th list request: delete ``changes`` products among those before
        ``skip`` (the ones a client already read, whose removal shifts its next pages; anywhere
        when ``skip`` is 0) and append as many new ones."""
        self.requests += 1
        if self.requests % self.every:
            return
        self.moves += 1
        for _ in range(self.changes):
            served = min(skip, len(catalog)) or len(catalog)
            product_id = catalog.id_at(self.rng.randrange(served)) if served else None
            if product_id is not None:
                catalog.delete(product_id)
            catalog.add()


class _RateLimiter:
    """A fixed window per client address, like DummyJSON's 100 requests per 10 seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._windows: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def hit(self, client: str) -> tuple[dict[str, str], int | None]:
        """Count one request: X-RateLimit headers, and Retry-After seconds when over the limit."""
        now = time.time()
        with self._lock:
            start, count = self._windows.get(client, (now, 0))
            if now >= start + self.window:
                start, count = now, 0
            count += 1
            self._windows[client] = (start, count)
        reset = start + self.window
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.limit - count, 0)),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }
        if count <= self.limit:
            return headers, None
        return headers, max(math.ceil(reset - now), 1)


def _unlimited_headers() -> dict[str, str]:
    """Rate-limit headers advertising an unused window, so polite clients never wait for nothing."""
    limit, window = DUMMYJSON_RATE_LIMIT
    reset = str(math.ceil(time.time() + window))
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(limit),
        "X-RateLimit-Reset": reset,
    }


def _json(status: int, payload: Any) -> _Response:
    """A JSON response."""
    return _Response(status, _encode(payload))


def _message(status: int, message: str) -> _Response:
    """A DummyJSON error: JSON {"message": ...}."""
    return _json(status, {"message": message})


def _status_message(status: int) -> str:
    """The message an injected status answers with."""
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        return RATE_LIMIT_MESSAGE
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"Injected error {status}"


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    """A numeric query parameter, or 400 the way DummyJSON words it."""
    value = query.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise _BadRequest(f"Invalid '{name}' - must be a number") from None


def _sort_key(value: Any) -> tuple[int, Any]:
    """Order numbers, then text, then anything else, without comparing across types."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0, value
    if isinstance(value, str):
        return 1, value
    return 2, _ENCODER.encode(value)


def _now_iso() -> str:
    """The current UTC time in the catalog's timestamp format."""
    return _iso(datetime.now(UTC).replace(tzinfo=None))


# --------------------------------------------------------------------------- the server


class FakeDummyJson:
    """A threaded local HTTP server speaking DummyJSON's /products protocol, with faults."""

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        products: int = 100,
        seed: int = 0,
        latency: float = 0.0,
        rate_limit: tuple[int, float] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_limit: int = 0,
    ) -> None:
        self.catalog = catalog if catalog is not None else Catalog(products, seed)
        self.latency = latency
        # A server-side page-size cap, as many real APIs have (DummyJSON has none): 0 = none.
        self.max_limit = max_limit
        self.host = host
        self.port = port
        self.url = ""
        self.requests: list[RequestRecord] = []
        self.connections_opened = 0
        self._limiter = _RateLimiter(*rate_limit) if rate_limit else None
        self._faults: list[Fault] = []
        self._chaos: _Chaos | None = None
        self._busy: _Busy | None = None
        self._callbacks: dict[int, list[Callable[[Catalog], None]]] = {}
        self._lock = threading.Lock()
        self._open_sockets: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"FakeDummyJson(url={self.url!r}, catalog={self.catalog!r})"

    def __enter__(self) -> FakeDummyJson:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> FakeDummyJson:
        """Bind (port 0 = any free port), serve in a daemon thread, and set `url`."""
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.url = f"http://{self.host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and every open connection, wake stalls."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            open_sockets = list(self._open_sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):  # the client may have closed it first
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def add_fault(self, fault: Fault) -> None:
        """Inject `fault` into the next matching requests; earlier faults match first."""
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Forget every injected fault: the server answers normally again."""
        with self._lock:
            self._faults.clear()

    def chaos(
        self,
        rate: float,
        kinds: Sequence[str] = ("500", "429"),
        seed: int = 0,
        retry_after: str = "0",
    ) -> None:
        """Fail each list request with probability `rate`, kinds drawn from a seeded sequence."""
        unknown = set(kinds) - set(CHAOS_KINDS)
        if unknown or not kinds:
            raise ValueError(f"chaos kinds must be among {CHAOS_KINDS}, got {list(kinds)}")
        with self._lock:
            if rate <= 0:
                self._chaos = None
            else:
                self._chaos = _Chaos(rate, tuple(kinds), random.Random(seed), retry_after)

    def busy(self, every: int, changes: int = 2, seed: int = 0) -> None:
        """Move the catalog while clients page: every `every` list requests (0 = never),
        delete `changes` products already served and append as many (see `_Busy.move`)."""
        if every < 0 or changes < 1:
            raise ValueError(f"busy needs every >= 0 and changes >= 1, got {every}, {changes}")
        with self._lock:
            self._busy = _Busy(every, changes, random.Random(seed)) if every else None

    def busy_moves(self) -> int:
        """How many times busy mode has moved the catalog."""
        with self._lock:
            return self._busy.moves if self._busy is not None else 0

    def on_list_request(self, skip: int, callback: Callable[[Catalog], None]) -> None:
        """Run `callback(catalog)` once, just before serving the first list request with `skip`."""
        with self._lock:
            self._callbacks.setdefault(skip, []).append(callback)

    def list_requests(self) -> list[RequestRecord]:
        """The GET /products list requests served so far."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path == "/products"]

    # The handler calls these; they are the server's behaviour, kept apart from socket plumbing.

    def _opened(self, sock: socket.socket) -> None:
        """Count an accepted connection and remember it so stop() can close it."""
        with self._lock:
            self.connections_opened += 1
            self._open_sockets.add(sock)

    def _closed(self, sock: socket.socket) -> None:
        """Forget a finished connection."""
        with self._lock:
            self._open_sockets.discard(sock)

    def _record(self, record: RequestRecord) -> None:
        """Keep a request for the test to inspect."""
        with self._lock:
            self.requests.append(record)

    def _sleep(self, seconds: float) -> None:
        """Wait, but wake at once when the server stops so no thread outlives it for long."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _answer(
        self, method: str, path: str, query: dict[str, str], body: bytes, client: str
    ) -> _Response:
        """Latency, then rate limit, then injected faults, then the protocol itself."""
        self._sleep(self.latency)
        if self._limiter is None:
            limit_headers, retry_after = _unlimited_headers(), None
        else:
            limit_headers, retry_after = self._limiter.hit(client)
        if retry_after is not None:
            response = _message(HTTPStatus.TOO_MANY_REQUESTS, RATE_LIMIT_MESSAGE)
            response.headers["Retry-After"] = str(retry_after)
        else:
            response = self._answer_or_fail(method, path, query, body)
        response.headers.update(limit_headers)
        return response

    def _answer_or_fail(
        self, method: str, path: str, query: dict[str, str], body: bytes
    ) -> _Response:
        """Apply the first matching fault; status and drop faults replace the answer entirely."""
        fault = self._take_fault(method, path, query)
        if fault is not None and fault.kind == "status":
            response = _message(fault.status, _status_message(fault.status))
            retry_after = fault.retry_after
            if retry_after is None and fault.status == HTTPStatus.TOO_MANY_REQUESTS:
                retry_after = "1"
            if retry_after is not None:
                response.headers["Retry-After"] = retry_after
            return response
        if fault is not None and fault.kind == "drop":
            return _Response(0, fault=fault)
        if fault is not None and fault.kind == "body":
            response = _Response(HTTPStatus.OK, fault.body)
            if fault.content_encoding:
                response.headers["Content-Encoding"] = fault.content_encoding
            return response
        response = self._route(method, path, query, body)
        response.fault = fault  # truncate or stall break the real answer
        return response

    def _take_fault(self, method: str, path: str, query: dict[str, str]) -> Fault | None:
        """Find the first fault for this request with hits left and count one down, else chaos."""
        is_list = method == "GET" and path == "/products"
        skip = _maybe_int(query.get("skip", "0")) if is_list else None
        product_id = (
            _maybe_int(path.removeprefix("/products/")) if path.startswith("/products/") else None
        )
        with self._lock:
            for fault in self._faults:
                if fault.times != 0 and fault.matches(is_list, skip, product_id):
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
            if is_list and self._chaos is not None:
                return self._chaos.draw()
        return None

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> _Response:
        """Dispatch to the DummyJSON route, translating bad parameters into 400s."""
        if path == "/products/":
            location = "/products" + (f"?{_query_string(query)}" if query else "")
            text = f"Moved Permanently. Redirecting to {location}".encode()
            return _Response(HTTPStatus.MOVED_PERMANENTLY, text, TEXT_TYPE, {"Location": location})
        try:
            self._sleep(min(max(_int_param(query, "delay", 0), 0), MAX_DELAY_MS) / 1000)
            if path == "/products" and method == "GET":
                return self._list(query)
            if path == "/products/add" and method == "POST":
                fields = {k: v for k, v in _json_body(body).items() if k != "id"}
                return _json(HTTPStatus.CREATED, {"id": self.catalog.next_id(), **fields})
            if path.startswith("/products/") and "/" not in path.removeprefix("/products/"):
                return self._item(method, path.removeprefix("/products/"), body)
        except _BadRequest as exc:
            return _message(HTTPStatus.BAD_REQUEST, str(exc))
        return _not_found_page(method, path)

    def _list(self, query: dict[str, str]) -> _Response:
        """GET /products: page, select and sort, echoing the count returned as `limit`."""
        limit = _int_param(query, "limit", DEFAULT_LIMIT)
        if self.max_limit and not 0 < limit <= self.max_limit:
            limit = self.max_limit
        skip = max(_int_param(query, "skip", 0), 0)
        self._run_callbacks(skip)
        sort_by = query.get("sortBy")
        select = [name for name in query.get("select", "").split(",") if name.strip()]
        if sort_by is None and not select:
            encoded, total = self.catalog.encoded_page(skip, limit)
            return _Response(HTTPStatus.OK, _page_body(encoded, total, skip))
        if sort_by is None:
            products, total = self.catalog.page(skip, limit)
        else:
            products, total = _sorted_page(
                self.catalog, sort_by, query.get("order", "asc"), skip, limit
            )
        if select:
            fields = ["id", *(name.strip() for name in select)]
            products = [{k: p[k] for k in dict.fromkeys(fields) if k in p} for p in products]
        payload = {"products": products, "total": total, "skip": skip, "limit": len(products)}
        return _json(HTTPStatus.OK, payload)

    def _item(self, method: str, raw_id: str, body: bytes) -> _Response:
        """GET, PUT, PATCH and DELETE /products/{id}; the writes answer but persist nothing."""
        product_id = _maybe_int(raw_id)
        product = self.catalog.get(product_id) if product_id is not None else None
        if method not in ("GET", "PUT", "PATCH", "DELETE"):
            return _not_found_page(method, f"/products/{raw_id}")
        if product is None:
            return _message(HTTPStatus.NOT_FOUND, f"Product with id '{raw_id}' not found")
        if method == "GET":
            return _json(HTTPStatus.OK, product)
        if method == "DELETE":
            return _json(HTTPStatus.OK, {**product, "isDeleted": True, "deletedOn": _now_iso()})
        changes = _json_body(body)
        updated = {name: product[name] for name in UPDATE_FIELDS if name in product}
        updated.update((name, changes[name]) for name in UPDATE_FIELDS if name in changes)
        updated["id"] = product["id"]
        return _json(HTTPStatus.OK, updated)

    def _run_callbacks(self, skip: int) -> None:
        """Fire, once, the callbacks waiting for the first list request with this skip; move a
        busy catalog."""
        with self._lock:
            callbacks = self._callbacks.pop(skip, [])
            if self._busy is not None:
                self._busy.move(self.catalog, skip)
        for callback in callbacks:
            callback(self.catalog)


def _maybe_int(text: str) -> int | None:
    """An integer from text, or None when it is not one."""
    try:
        return int(text)
    except ValueError:
        return None


def _query_string(query: dict[str, str]) -> str:
    """Rebuild a query string for the redirect's Location."""
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())


def _json_body(body: bytes) -> dict[str, Any]:
    """A request's JSON object body ({} when empty), or 400."""
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise _BadRequest(f"Invalid JSON body: {exc}") from None
    if not isinstance(payload, dict):
        raise _BadRequest("Invalid JSON body: expected an object")
    return payload


def _page_body(encoded: list[bytes], total: int, skip: int) -> bytes:
    """Join pre-encoded products into a list response without decoding them again."""
    tail = f'],"total":{total},"skip":{skip},"limit":{len(encoded)}}}'.encode()
    return b"".join((b'{"products":[', b",".join(encoded), tail))


def _sorted_page(
    catalog: Catalog, sort_by: str, order: str, skip: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """Sort the whole catalog by a field (absent values last), then page; slow but rarely used."""
    if order not in ("asc", "desc"):
        raise _BadRequest("Order should be 'asc' or 'desc'")
    products = list(catalog.products())
    present = [p for p in products if sort_by in p]
    present.sort(key=lambda p: _sort_key(p[sort_by]), reverse=order == "desc")
    ordered = present + [p for p in products if sort_by not in p]
    stop = len(ordered) if limit <= 0 else skip + limit
    return ordered[skip:stop], len(ordered)


def _not_found_page(method: str, path: str) -> _Response:
    """Express's HTML 404 page, which DummyJSON answers for unknown routes."""
    text = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
        f"</head>\n<body>\n<pre>Cannot {method} {html.escape(path)}</pre>\n</body>\n</html>\n"
    )
    return _Response(HTTPStatus.NOT_FOUND, text.encode(), HTML_TYPE)


class _Server(ThreadingHTTPServer):
    """The HTTP server: one daemon thread per connection, errors logged rather than printed."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: FakeDummyJson) -> None:
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host, which can take seconds."""
        TCPServer.server_bind(self)
        self.server_name, self.server_port = (
            str(self.server_address[0]),
            int(self.server_address[1]),
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up are normal here; anything else is a bug worth a traceback."""
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s dropped", client_address, exc_info=True)
        else:
            log.exception("error answering %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    """Socket plumbing: read the request, ask FakeDummyJson for the answer, write (or break) it."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, so a requests.Session reuses its connection
    disable_nagle_algorithm = True  # headers and body go out at once, no 40 ms delayed-ACK stalls

    def setup(self) -> None:
        super().setup()
        self.server.app._opened(self.connection)

    def finish(self) -> None:
        self.server.app._closed(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: no stderr line per request."""

    def do_GET(self) -> None:  # the stdlib dispatches on these names
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        """Answer one request, recording it before any byte goes out so tests never race it."""
        app = self.server.app
        arrived = time.monotonic()
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        response = app._answer(self.command, url.path, query, body, self.client_address[0])
        headers = {name.lower(): value for name, value in self.headers.items()}
        status = int(response.status)
        app._record(RequestRecord(self.command, url.path, query, status, headers, body, arrived))
        self._send(response)

    def _send(self, response: _Response) -> None:
        """Write the response whole, or break it as its fault says."""
        fault = response.fault
        if fault is not None and fault.kind == "drop":
            self.close_connection = True  # close without a single byte
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if fault is None:
            self.wfile.write(response.body)
        elif fault.kind == "truncate":
            self.wfile.write(response.body[: len(response.body) // 2])
            self.close_connection = True
        elif fault.kind == "stall":
            self.wfile.write(response.body[: len(response.body) // 4])
            self.wfile.flush()
            self.server.app._sleep(fault.seconds)
            self.close_connection = True
        elif fault.kind == "trickle":
            for index in range(len(response.body)):
                if self.server.app._stopping.is_set():
                    break
                self.wfile.write(response.body[index : index + 1])
                self.wfile.flush()
                self.server.app._sleep(fault.seconds)
            self.close_connection = True


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a synthetic catalog on a local port until Ctrl-C (the README's offline demo)."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.local_api", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="0 = any free port (default 8000)")
    parser.add_argument("--products", type=int, default=500, help="catalog size (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic catalog")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    parser.add_argument(
        "--rate-limit", action="store_true", help="enforce DummyJSON's 100 requests per 10 seconds"
    )
    for change, meaning in (("add", "serve a new"), ("drop", "stop serving a"), ("retype", "")):
        parser.add_argument(
            f"--{change}-field",
            action="append",
            default=[],
            metavar="PATH",
            help=(f"{meaning} field" if meaning else "serve a field with another JSON type")
            + ' (repeatable; "color", "meta.batch", "reviews[].likes")',
        )
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        metavar="N",
        help="move the catalog every N list requests: delete products already served, append "
        "new ones (default 0 = a still catalog)",
    )
    parser.add_argument(
        "--busy-changes",
        type=int,
        default=2,
        help="products deleted and appended at each move (default 2)",
    )
    args = parser.parse_args(argv)
    if args.products < 0:
        parser.error("--products must be 0 or more")
    if args.busy < 0 or args.busy_changes < 1:
        parser.error("--busy must be 0 or more and --busy-changes at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = FakeDummyJson(
        products=args.products,
        seed=args.seed,
        latency=args.latency_ms / 1000,
        rate_limit=DUMMYJSON_RATE_LIMIT if args.rate_limit else None,
        host=args.host,
        port=args.port,
    )
    server.catalog.evolve(
        SchemaChange(tuple(args.add_field), tuple(args.drop_field), tuple(args.retype_field))
    )
    server.busy(args.busy, args.busy_changes, seed=args.seed)
    try:
        server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 1
    log.info("Serving %d products at %s/products (Ctrl-C to stop)", args.products, server.url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("Stopping")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
