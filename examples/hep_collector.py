"""A minimal HEPv3 collector: prints every packet it receives, one per line.

    python examples/hep_collector.py [--tcp] [--port 9060] [--count N]

For trying out a relay's tracing without Homer:

    python examples/hep_collector.py --port 9060 &
    twistd -n msrp --trace-destination udp:127.0.0.1:9060 --trace-on 1

The first line says where it listens (useful with --port 0). Each packet is
printed as: protocol type, source -> destination, the correlation id (the
relay's connection id), then the payload (JSON of a connection event, or the
text of a traced MSRP message). With --count N it exits 0 after N packets;
malformed packets are reported and skipped. Listens on 127.0.0.1 only.
"""

import argparse
import json
import sys

from twisted.internet import defer, task
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

from msrp_twisted.core.hep import HEPDecodeError, HEPStreamDecoder, decode_hep

PROTO_NAMES = {0x01: "SIP", 0x59: "net (0x59)", 0x64: "log (0x64)"}


def describe(packet):
    kind = PROTO_NAMES.get(packet.proto_type, "0x%02x" % (packet.proto_type or 0))
    payload = packet.payload or b""
    try:
        text = json.dumps(json.loads(payload), ensure_ascii=False)  # one line
    except ValueError:
        text = payload.decode("utf-8", "replace").replace("\r\n", " | ").rstrip(" |")
    return "HEP %s %s:%s -> %s:%s cid=%s %s" % (
        kind, packet.src_ip, packet.src_port, packet.dst_ip, packet.dst_port,
        (packet.correlation_id or b"-").decode("ascii", "replace"), text)


class Printer:
    def __init__(self, count, done):
        self.left = count
        self.done = done

    def packet(self, packet):
        print(describe(packet), flush=True)
        if self.left is not None:
            self.left -= 1
            if self.left == 0 and not self.done.called:
                self.done.callback(None)

    def bad(self, error):
        print("malformed HEP packet skipped: %s" % error, flush=True)


class UDPCollector(DatagramProtocol):
    def __init__(self, printer):
        self.printer = printer

    def datagramReceived(self, data, address):
        try:
            packet = decode_hep(data)
        except HEPDecodeError as e:
            self.printer.bad(e)
        else:
            self.printer.packet(packet)


class TCPCollector(Protocol):
    def __init__(self, printer):
        self.printer = printer
        self.decoder = HEPStreamDecoder()

    def dataReceived(self, data):
        try:
            packets = self.decoder.feed(data)
        except HEPDecodeError as e:
            for packet in getattr(e, "packets", ()):
                self.printer.packet(packet)
            self.printer.bad(e)
            self.transport.loseConnection()  # a stream cannot be re-synchronised
            return
        for packet in packets:
            self.printer.packet(packet)


def main(reactor, args):
    done = defer.Deferred()
    printer = Printer(args.count, done)
    if args.tcp:
        port = reactor.listenTCP(args.port, Factory.forProtocol(lambda: TCPCollector(printer)),
                                 interface="127.0.0.1")
    else:
        port = reactor.listenUDP(args.port, UDPCollector(printer), interface="127.0.0.1")
    print("HEP collector listening on %s:127.0.0.1:%d" % ("tcp" if args.tcp else "udp",
                                                          port.getHost().port), flush=True)
    return done.addBoth(lambda result: defer.maybeDeferred(port.stopListening).addCallback(
        lambda _: result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the HEPv3 packets sent to 127.0.0.1:PORT.")
    parser.add_argument("--port", type=int, default=9060, help="port to listen on (0: any free one)")
    parser.add_argument("--tcp", action="store_true", help="listen on TCP instead of UDP")
    parser.add_argument("--count", type=int, default=None, help="exit after this many packets")
    arguments = parser.parse_args()
    if arguments.count is not None and arguments.count < 1:
        parser.error("--count must be 1 or more")
    try:
        task.react(main, [arguments])
    except KeyboardInterrupt:
        sys.exit(0)
