"""`msrp-passwd FILE REALM USER`: add or change a user in an htdigest file.

The same format as Apache's htdigest (user:realm:HA1), for hosts where
apache2-utils is not installed. The password is read from the terminal, or
from standard input with --stdin. The relay re-reads the file on change.
"""

import getpass
import os
import sys
import tempfile

from .core.digest import compute_ha1


def update_file(path, realm, user, password):
    if ":" in user or ":" in realm or not user:
        raise ValueError("user and realm must be non-empty and contain no ':'")
    lines = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
    entry = "%s:%s:%s" % (user, realm, compute_ha1(user, realm, password))
    out, replaced = [], False
    for line in lines:
        parts = line.split(":")
        if len(parts) == 3 and parts[0] == user and parts[1] == realm:
            out.append(entry)
            replaced = True
        else:
            out.append(line)
    if not replaced:
        out.append(entry)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".msrp-passwd-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)  # atomic: the relay never reads a half-written file
    return replaced


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    from_stdin = "--stdin" in args
    args = [a for a in args if a != "--stdin"]
    if len(args) != 3 or any(a.startswith("-") for a in args):
        sys.stderr.write("usage: msrp-passwd [--stdin] FILE REALM USER\n")
        return 2
    path, realm, user = args
    try:
        if from_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass("Password for %s: " % user)
            if getpass.getpass("Again: ") != password:
                sys.stderr.write("msrp-passwd: passwords differ\n")
                return 1
        if not password:
            sys.stderr.write("msrp-passwd: empty password refused\n")
            return 1
        replaced = update_file(path, realm, user, password)
    except (OSError, ValueError) as e:
        sys.stderr.write("msrp-passwd: %s\n" % e)
        return 1
    sys.stdout.write("%s %s in %s (realm %s)\n" % ("updated" if replaced else "added", user, path, realm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
