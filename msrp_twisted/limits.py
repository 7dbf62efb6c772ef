"""Per-source-address limits: failed AUTH throttling and connection caps.

Both keep bounded state: an attacker spraying addresses evicts the oldest
entries instead of growing the tables, and time comes from an injected
IReactorTime so the policies are testable with task.Clock.
"""

from collections import OrderedDict

DEFAULT_MAX_TRACKED = 65536


class AuthThrottle:
    """Refuses AUTH from an address after too many failures.

    ``max_failures`` failed AUTHs (wrong password, unknown user, replay,
    malformed credentials; plain 401 challenges do not count) within
    ``window`` seconds block the address for ``block`` seconds. A success
    clears the address's record. max_failures 0 disables the throttle.
    """

    def __init__(self, clock, max_failures=10, window=60.0, block=300.0, max_tracked=DEFAULT_MAX_TRACKED):
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        self.block = block
        self.max_tracked = max_tracked
        self._entries = OrderedDict()  # address -> [first_failure_time, count, blocked_until]
        self.stats = {"auth_failures": 0, "auth_blocked": 0, "addresses_blocked": 0}

    def blocked(self, address):
        """Seconds the address stays blocked, or 0."""
        if not self.max_failures:
            return 0
        entry = self._entries.get(address)
        if entry is None:
            return 0
        remaining = entry[2] - self.clock.seconds()
        if remaining > 0:
            self.stats["auth_blocked"] += 1
            return remaining
        return 0

    def failed(self, address):
        """Record a failure; returns True when this failure starts a block."""
        if not self.max_failures:
            return False
        self.stats["auth_failures"] += 1
        now = self.clock.seconds()
        entry = self._entries.get(address)
        if entry is None or now - entry[0] > self.window:
            entry = [now, 0, 0.0]
            self._entries[address] = entry
            self._entries.move_to_end(address)
            while len(self._entries) > self.max_tracked:
                self._entries.popitem(last=False)
        entry[1] += 1
        if entry[1] >= self.max_failures and entry[2] <= now:
            entry[2] = now + self.block
            entry[0] = now
            entry[1] = 0
            self.stats["addresses_blocked"] += 1
            return True
        return False

    def succeeded(self, address):
        entry = self._entries.get(address)
        if entry is not None and entry[2] <= self.clock.seconds():
            del self._entries[address]

    def __len__(self):
        return len(self._entries)


class ConnectionCap:
    """At most ``limit`` simultaneous connections from one address (0: no cap)."""

    def __init__(self, limit=0):
        self.limit = limit
        self._counts = {}
        self.stats = {"connections_refused": 0}

    def admit(self, address):
        """Count a new connection; False when it is over the cap."""
        n = self._counts.get(address, 0)
        if self.limit and n >= self.limit:
            self.stats["connections_refused"] += 1
            return False
        self._counts[address] = n + 1
        return True

    def release(self, address):
        n = self._counts.get(address, 0)
        if n <= 1:
            self._counts.pop(address, None)
        else:
            self._counts[address] = n - 1

    def count(self, address):
        return self._counts.get(address, 0)
