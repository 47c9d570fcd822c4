"""Hypothesis strategies shared by the fuzz tests: payloads, SenML packs and topics.

Each strategy mixes the well-formed (so the deep branches of a parser are reached) with the
malformed (so its refusals are exercised): arbitrary bytes and text, JSON of any shape, SenML
records with values of every kind under every key, the records the firmware really sends, and
topics one part away from a real control topic.
"""

import json
from typing import Any

from hypothesis import strategies as st

from custom_components.insighio_ota.protocol import MAX_TEXT_LENGTH

# Ids as the console hands them out, and a few that break the rules of a topic.
UUIDS = st.uuids().map(str)
ODD_IDS = st.sampled_from(["", "+", "#", "a/b", "\x00", " ", "é", "x" * 300])
IDS = st.one_of(UUIDS, ODD_IDS, st.text(max_size=12))

# Values that broke something once, or that parsers commonly trip over, drawn often on purpose:
# random generation alone rarely builds them inside a whole message sequence.
NASTY_TEXT = st.sampled_from(["", " ", "\ud800", "a\udfff", "\ud83d", "\x00", "é", "🙂", "\u2028"])
NASTY_NUMBERS = st.sampled_from(
    [2**63, -(2**63) - 1, 2**64, 10**30, 1e19, 1e300, -0.0, 0.5, float("inf"), float("nan")]
)
# Text that reaches a parser: any Unicode, lone surrogates included (JSON can escape them).
TEXT = st.one_of(st.text(max_size=40), NASTY_TEXT)
LONG_TEXT = st.text(min_size=MAX_TEXT_LENGTH - 2, max_size=MAX_TEXT_LENGTH * 2)

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    NASTY_NUMBERS,
    st.integers(),
    # Big but convertible: a JSON number of more than 4300 digits is refused by Python itself.
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    LONG_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=12,
)

OTA_NAMES = ["e", "i", "t", "s", "m"]
STAT_NAMES = [
    "sw_branch",
    "sw_commit",
    "sw_custom_branch",
    "sw_custom_commit",
    "hw_version",
    "serial",
    "platform",
    "fw_v_major",
    "fw_v_minor",
    "fw_v_patch",
    "fw_v_commit",
    "free_flash",
    "free_data_flash",
    "vbatt",
    "imei",
]
RECORD_NAMES = st.one_of(st.sampled_from(OTA_NAMES + STAT_NAMES), TEXT, JSON_VALUES)


@st.composite
def senml_records(draw: st.DrawFn, names: st.SearchStrategy[Any] = RECORD_NAMES) -> Any:
    """Return one record: a name, a value under `v`, `vs` or `vb`, maybe base or odd fields."""
    record: dict[str, Any] = {}
    if draw(st.integers(0, 9)):  # Mostly named.
        record["n"] = draw(names)
    for key in draw(st.lists(st.sampled_from(["v", "vs", "vb"]), max_size=2, unique=True)):
        record[key] = draw(
            st.one_of(
                {"v": st.integers() | st.floats(), "vs": TEXT | LONG_TEXT, "vb": st.booleans()}[
                    key
                ],
                JSON_VALUES,
            )
        )
    for key in draw(st.lists(st.sampled_from(["bn", "bt", "u", "t", "m"]), max_size=2)):
        record[key] = draw(st.sampled_from(["i"]) | JSON_SCALARS)
    if draw(st.booleans()):
        # Key order must not matter: the firmware writes `v` before `n`.
        record = dict(reversed(list(record.items())))
    return record


def senml_packs(names: st.SearchStrategy[Any] = RECORD_NAMES) -> st.SearchStrategy[Any]:
    """Return SenML packs: lists of records, sometimes with a non-record among them."""
    return st.lists(st.one_of(senml_records(names), senml_records(names), JSON_VALUES), max_size=8)


def encoded(values: st.SearchStrategy[Any]) -> st.SearchStrategy[str | bytes | bytearray]:
    """Return JSON documents of `values` as HA (`str`, `bytes`) or paho (`bytearray`) hand them."""

    @st.composite
    def _encode(draw: st.DrawFn) -> str | bytes | bytearray:
        text = json.dumps(draw(values), ensure_ascii=draw(st.booleans()))
        kind = draw(st.sampled_from(["str", "bytes", "bytearray", "padded"]))
        if kind == "padded":
            return f" \n{text}\t "
        if kind == "str":
            return text
        # A lone surrogate cannot be UTF-8 encoded; the broker could not have sent that text.
        raw = text.encode("utf-8", errors="surrogatepass")
        return raw if kind == "bytes" else bytearray(raw)

    return _encode()


def payloads(names: st.SearchStrategy[Any] = RECORD_NAMES) -> st.SearchStrategy[Any]:
    """Return what a broker can deliver: SenML-ish JSON, any JSON, any text, any bytes."""
    return st.one_of(
        encoded(senml_packs(names)),
        encoded(senml_packs(names)),
        encoded(JSON_VALUES),
        st.text(),
        st.binary(),
        st.sampled_from(["", " ", "[]", "[{}]", "{}", "null", "[" * 5000 + "]" * 5000]),
    )


def ota_packs() -> st.SearchStrategy[Any]:
    """Return packs built mostly of the OTA records, with values of every kind."""
    return senml_packs(st.sampled_from(OTA_NAMES) | RECORD_NAMES)


def stat_packs() -> st.SearchStrategy[Any]:
    """Return packs built mostly of the /stat records, with values of every kind."""
    return senml_packs(st.sampled_from(STAT_NAMES) | RECORD_NAMES)


@st.composite
def topics(draw: st.DrawFn) -> str:
    """Return a topic: a real control or telemetry topic, one with one part changed, or any text."""
    parts = ["channels", draw(IDS), "messages", draw(IDS)]
    suffix = draw(st.sampled_from(["ota", "stat", "cmd", "config", "OTA", "", None]))
    if suffix is not None:
        parts.append(suffix)
    if draw(st.booleans()):
        index = draw(st.integers(0, len(parts) - 1))
        parts[index] = draw(st.sampled_from(["", "channel", "message", "x", "+", "#"]) | TEXT)
    if draw(st.integers(0, 4)) == 0:
        parts.append(draw(TEXT))
    # Now and then anything at all, the way a misbehaving client may publish.
    return draw(st.text()) if draw(st.integers(0, 9)) == 0 else "/".join(parts)
