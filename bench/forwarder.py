"""A plain Twisted TCP forwarder: the ceiling for a relay written on Twisted.

It does no MSRP work at all. Each accepted connection gets one outbound
connection to the target, and bytes are piped both ways with Twisted's own
flow control: each transport is registered as the streaming producer of the
other, so a side whose write buffer fills pauses reading on the opposite
side. Nothing is parsed or copied beyond what the transports do.

The bulk benchmark sends the same MSRP frames through it as through the
relay; the ratio relay/forwarder is the cost of MSRP on top of Twisted's
TCP on this machine.

    python bench/forwarder.py --listen 127.0.0.1:0 --target 127.0.0.1:9001

prints ``listening on 127.0.0.1:PORT`` once it accepts connections, and
runs until SIGTERM/SIGINT or --lifetime seconds. Loopback addresses only.
"""

import argparse
import ipaddress
import sys

from twisted.internet import protocol


def _loopback_hostport(text):
    host, sep, port = text.rpartition(":")
    try:
        if not sep or not ipaddress.ip_address(host).is_loopback:
            raise ValueError
        port = int(port)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError("expected LOOPBACK-IP:PORT, got %r" % text) from None
    return host, port


def _close(transport):
    # A registered producer would keep loseConnection from finishing.
    if transport.producer is not None:
        transport.unregisterProducer()
    transport.loseConnection()


class _Outbound(protocol.Protocol):
    """The connection to the target, paired with one inbound connection."""

    def __init__(self, inbound):
        self.inbound = inbound

    def connectionMade(self):
        self.transport.bufferSize = self.inbound.factory.buffer_size
        self.inbound.paired(self)

    def dataReceived(self, data):
        self.inbound.transport.write(data)

    def connectionLost(self, reason):
        _close(self.inbound.transport)


class _Inbound(protocol.Protocol):
    """An accepted connection: reading waits until the target is connected."""

    outbound = None

    def connectionMade(self):
        self.transport.bufferSize = self.factory.buffer_size
        self.transport.pauseProducing()
        factory = protocol.ClientFactory()
        factory.protocol = lambda: _Outbound(self)
        factory.clientConnectionFailed = lambda connector, reason: self.transport.loseConnection()
        host, port = self.factory.target
        self.factory.reactor.connectTCP(host, port, factory, timeout=5)

    def paired(self, outbound):
        self.outbound = outbound
        # Each side pauses the other while its own write buffer is full.
        outbound.transport.registerProducer(self.transport, True)
        self.transport.registerProducer(outbound.transport, True)
        self.transport.resumeProducing()

    def dataReceived(self, data):
        self.outbound.transport.write(data)

    def connectionLost(self, reason):
        if self.outbound is not None:
            _close(self.outbound.transport)


class ForwarderFactory(protocol.ServerFactory):
    protocol = _Inbound

    def __init__(self, reactor, target, buffer_size=256 * 1024):
        self.reactor = reactor
        self.target = target
        # Twisted's bufferSize is both the read size and the write buffer
        # that pauses the other side. Our relay sets both to its
        # write_buffer_size (256 KiB by default); the ceiling gets the same.
        self.buffer_size = buffer_size


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=_loopback_hostport, default=("127.0.0.1", 0), metavar="IP:PORT")
    p.add_argument("--target", type=_loopback_hostport, required=True, metavar="IP:PORT")
    p.add_argument("--lifetime", type=float, default=3600.0, help="exit after this many seconds [3600]")
    p.add_argument("--buffer-size", type=int, default=256 * 1024,
                   help="each transport's read size and write buffer, as the relay's write_buffer_size [262144]")
    args = p.parse_args(argv)

    from twisted.internet import reactor

    port = reactor.listenTCP(args.listen[1], ForwarderFactory(reactor, args.target, args.buffer_size), interface=args.listen[0])
    address = port.getHost()
    print("listening on %s:%d" % (address.host, address.port), flush=True)
    reactor.callLater(args.lifetime, reactor.stop)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
