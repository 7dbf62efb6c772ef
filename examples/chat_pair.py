"""Two chat endpoints talking through an MSRP relay, all in one process.

    python examples/chat_pair.py

Starts an RFC 4976 relay on 127.0.0.1 (a random free port) with two users,
alice and bob. Each endpoint authenticates to the relay (Digest AUTH) and gets
a relay session; alice opens the MSRP session towards bob's path, and they
exchange a few messages. Exits 0 once every message was delivered and
confirmed, 1 on any failure.

In a real application the two endpoints run in different processes and swap
their paths in SIP/SDP (a=path); here the paths are handed over directly.
"""

import os
import sys
import tempfile

from twisted.internet import defer, task

from msrp_twisted.config import MSRPConfig
from msrp_twisted.endpoint import Endpoint
from msrp_twisted.passwd import update_file
from msrp_twisted.service import MSRPService

USERS = {"alice": "alice-secret", "bob": "bob-secret"}


@defer.inlineCallbacks
def start_relay(reactor, directory):
    """A relay like `twistd msrp --listen msrp:127.0.0.1:0 --users FILE --mi none`."""
    users_file = os.path.join(directory, "users.htdigest")
    for user, password in USERS.items():
        update_file(users_file, "msrp", user, password)
    config = MSRPConfig.from_mapping({
        "listen": ["msrp:127.0.0.1:0"],
        "users": users_file,
        "mi": "none",
    })
    relay = MSRPService(config, reactor=reactor)
    yield relay.start()
    return relay


@defer.inlineCallbacks
def main(reactor):
    with tempfile.TemporaryDirectory() as directory:
        relay = yield start_relay(reactor, directory)
        relay_uri = relay.relay.uris[0]
        print("relay listening at", relay_uri)

        inbox = {"alice": defer.DeferredQueue(), "bob": defer.DeferredQueue()}
        alice_ep, bob_ep = Endpoint(reactor), Endpoint(reactor)
        try:
            alice = yield alice_ep.create_session(
                relays=[(relay_uri, "alice", USERS["alice"])], on_message=inbox["alice"].put)
            bob = yield bob_ep.create_session(
                relays=[(relay_uri, "bob", USERS["bob"])], on_message=inbox["bob"].put)
            print("alice's path:", len(alice.path), "URIs (relay session, then alice)")

            # The offerer connects actively (an empty SEND opens the session);
            # the answerer only records the offerer's path.
            yield bob.connect(alice.path_text, active=False)
            yield alice.connect(bob.path_text)

            for sender, receiver, text in [
                (alice, "bob", "Hello Bob!"),
                (bob, "alice", "Hi Alice, loud and clear."),
                (alice, "bob", "Größe: ünïcödé text is UTF-8."),
            ]:
                name = "alice" if sender is alice else "bob"
                outgoing = sender.send_message(text, success_report=True)
                yield outgoing.result  # the far end's success REPORT arrived
                message = yield inbox[receiver].get()
                print("%s -> %s: %s [%s, %d bytes, delivery confirmed]" % (
                    name, receiver, message.data.decode("utf-8"), message.content_type, message.size))
        finally:
            yield alice_ep.close()
            yield bob_ep.close()
            yield relay.stopService()
    print("done")


if __name__ == "__main__":
    def run(reactor):
        def failed(failure):
            print("chat_pair failed: %s" % failure.getErrorMessage(), file=sys.stderr)
            raise SystemExit(1)

        return main(reactor).addErrback(failed)

    task.react(run)
