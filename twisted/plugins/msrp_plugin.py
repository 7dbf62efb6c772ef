from twisted.application.service import ServiceMaker

msrp = ServiceMaker("msrp", "msrp_twisted.tap", "RFC 4976 MSRP relay", "msrp")
