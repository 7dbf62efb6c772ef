"""Random identifiers for transactions, messages and sessions.

RFC 4975 asks for transaction ids and session ids that are unique and hard
to guess (its security considerations want at least 80 bits of randomness
in a session-id);
a guessable session-id lets a third party inject frames into a session
through a relay. Every id here is drawn from the ``secrets`` CSPRNG and
encoded with an alphabet that the grammar allows everywhere the id appears,
so no id ever needs escaping.
"""

import os
import re
import secrets

# RFC 4975 section 9:
#   ident        = ALPHANUM  3*31ident-char
#   ident-char   = ALPHANUM / "." / "-" / "+" / "%" / "="
#   transact-id  = ident
#   Message-ID   = "Message-ID:" SP ident
IDENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}\Z")

# RFC 4975 section 9:
#   session-id   = 1*( unreserved / "+" / "=" / "/" )
# RFC 3986 section 2.3:
#   unreserved   = ALPHA / DIGIT / "-" / "." / "_" / "~"
SESSION_ID_RE = re.compile(r"[A-Za-z0-9\-._~+=/]+\Z")

# Lower-case hex is a subset of ident-char and starts with ALPHANUM, so any
# hex string of 4..32 characters is an ident.
TRANSACTION_ID_BYTES = 12  # 24 hex characters, 96 bits
MESSAGE_ID_BYTES = 16  # 32 hex characters (the ident maximum), 128 bits
# token_urlsafe uses A-Z a-z 0-9 "-" "_", all of them unreserved. 15 bytes
# is a multiple of 3, so the encoding has no padding and every one of its 20
# characters carries a full 6 bits.
SESSION_ID_BYTES = 15  # 20 characters, 120 bits

TRANSACTION_ID_BITS = TRANSACTION_ID_BYTES * 8
MESSAGE_ID_BITS = MESSAGE_ID_BYTES * 8
SESSION_ID_BITS = SESSION_ID_BYTES * 8


_POOL_IDS = 256
_pool = []
# A forked child must not hand out ids its parent may also use.
os.register_at_fork(after_in_child=_pool.clear)


def new_transaction_id():
    """A fresh transact-id: 96 random bits as 24 lower-case hex digits.

    A relay needs one per forwarded chunk; drawing them from the CSPRNG
    256 at a time costs one system call where there would be 256. Each id
    is still 96 bits of the kernel's randomness, used once.
    """
    if not _pool:
        raw = secrets.token_hex(TRANSACTION_ID_BYTES * _POOL_IDS)
        step = TRANSACTION_ID_BYTES * 2
        _pool.extend(raw[i:i + step] for i in range(0, len(raw), step))
    return _pool.pop()


def new_message_id():
    """A fresh Message-ID value: 128 random bits as 32 lower-case hex digits.

    Message-IDs outlive transactions (reports and resumed transfers refer
    back to them), so they get the longest ident the grammar allows.
    """
    return secrets.token_hex(MESSAGE_ID_BYTES)


def new_session_id():
    """A fresh session-id for an MSRP URI: 120 random bits, 20 characters."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def is_valid_ident(value):
    """True if ``value`` is an RFC 4975 ident (transact-id, Message-ID)."""
    return isinstance(value, str) and IDENT_RE.match(value) is not None


def is_valid_session_id(value):
    """True if ``value`` matches the session-id rule exactly (no escapes)."""
    return isinstance(value, str) and SESSION_ID_RE.match(value) is not None


# A worker's session-ids start with its index and a dot. "." is not in the
# token_urlsafe alphabet, so a plain session-id never looks owned, and the
# random part keeps its full 120 bits.
_OWNER_RE = re.compile(r"(0|[1-9][0-9]{0,3})\.")


def new_owned_session_id(owner):
    """A session-id that names the worker process owning it: ``"3.<20 chars>"``.

    The index tells a sibling worker where to send the frame; the 120
    random bits after it are what makes the id unguessable.
    """
    if isinstance(owner, bool) or not isinstance(owner, int) or not 0 <= owner <= 9999:
        raise ValueError("a session owner is a worker index 0..9999, not %r" % (owner,))
    return "%d.%s" % (owner, secrets.token_urlsafe(SESSION_ID_BYTES))


def session_id_owner(session_id):
    """The worker index an owned session-id names, or None for any other id."""
    if not isinstance(session_id, str):
        return None
    m = _OWNER_RE.match(session_id)
    return int(m.group(1)) if m is not None else None
